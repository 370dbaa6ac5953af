"""fedcrypt.testing's dropout state machine on the in-process clients (SecAgg, SecAgg+, verify)."""

from hypothesis import settings

from fedcrypt.testing import dropout_state_machine

TestInProcessDropouts = dropout_state_machine().TestCase
TestInProcessDropouts.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
