"""The verify round: honest sums, dropouts, weights, batches, refusals that leave state
unchanged, replays, state bytes, configs and the fixed-point encoding."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fedcrypt.crypto import X25519KeyPair
from fedcrypt.dp.clipping import clip_l2
from fedcrypt.errors import (
    ContextMismatchError,
    EncodingError,
    LocalProtocolError,
    MalformedMessageError,
    ProtocolViolationError,
    RoundAbortedError,
    SpecMismatchError,
    UnexpectedMessageError,
)
from fedcrypt.vectors import TensorSpec
from fedcrypt.verify import (
    HELPER,
    AggregateRequest,
    LeaderPrep,
    PrepareRequest,
    Report,
    Stage,
    Status,
    UploadRequest,
    VerifyClient,
    VerifyConfig,
    simulate,
)
from fedcrypt.verify.config import best_chunk_lengths
from fedcrypt.verify.encoding import encode_vector, squared_norm

from ._kit import CONFIG, DIM, HELPER_KEY, VERIFY_KEY, Round, config, expected_sum, vectors


# ---------------------------------------------------------------------------- honest rounds
@settings(max_examples=6, deadline=None)
@given(
    n=st.integers(2, 4),
    seed=st.integers(0, 2**32 - 1),
    scale=st.sampled_from([0.01, 0.3, 5.0]),
    data=st.data(),
)
def test_the_sum_is_exactly_the_accepted_clients_encoded_vectors(n, seed, scale, data):
    vs = vectors(n, scale=scale, seed=seed)
    weights = data.draw(st.lists(st.floats(0.01, 1.0), min_size=n, max_size=n))
    dropped = data.draw(st.sets(st.integers(0, n - 1), max_size=n - 2))
    out = simulate(CONFIG, vs, weights, dropouts={Stage.UPLOAD: dropped}, helper_key=HELPER_KEY)
    kept = [i for i in range(n) if i not in dropped]
    assert out.accepted == tuple(kept)
    assert out.count == len(kept)
    assert np.array_equal(out.sum, expected_sum(CONFIG, [vs[i] for i in kept], [weights[i] for i in kept]))
    assert out.report.dropped == {i: "UPLOAD" for i in dropped}
    assert out.report.rejected == {}


def test_clipped_sum_is_close_to_the_float_sum_within_one_unit_per_entry():
    vs = vectors(3, scale=0.05)  # norms well below 1: no clipping
    out = simulate(CONFIG, vs, helper_key=HELPER_KEY)
    unit = 2.0 ** -CONFIG.params.num_frac_bits
    assert np.max(np.abs(out.sum - np.sum(vs, axis=0, dtype=np.float64))) <= 3 * unit


def test_weights_scale_by_max_weight():
    cfg = config(max_weight=10.0)
    vs = vectors(2, scale=0.05)
    out = simulate(cfg, vs, [10.0, 5.0], helper_key=HELPER_KEY)
    assert np.array_equal(out.sum, expected_sum(cfg, vs, [10.0, 5.0]))
    assert np.allclose(out.sum, vs[0] + 0.5 * vs[1], atol=2 * 2.0 ** -cfg.params.num_frac_bits)
    with pytest.raises(EncodingError):
        simulate(cfg, vs, [11.0, 1.0], helper_key=HELPER_KEY)


@pytest.mark.parametrize("batch_size", [1, 2])
def test_batches_sent_during_upload_give_the_same_sum(batch_size):
    vs = vectors(3)
    out = simulate(CONFIG, vs, batch_size=batch_size, helper_key=HELPER_KEY)
    assert np.array_equal(out.sum, expected_sum(CONFIG, vs))


def test_simulate_without_a_helper_key_makes_one_and_reports_costs():
    out = simulate(CONFIG, vectors(2))
    assert out.config.helper_key != CONFIG.helper_key
    assert out.upload_bytes > out.encoded_vector_bytes == DIM * 5
    assert out.leader_to_helper_bytes > 0 and out.helper_to_leader_bytes > 0
    assert set(out.stage_seconds) >= {"leader:UPLOAD", "helper:PREPARE", "helper:AGGREGATE"}
    assert "upload_ratio" in repr(out)


def test_too_many_dropouts_abort():
    with pytest.raises(RoundAbortedError):
        simulate(CONFIG, vectors(3), dropouts={Stage.UPLOAD: {0, 1}}, helper_key=HELPER_KEY)
    with pytest.raises(ValueError):
        simulate(CONFIG, vectors(3), dropouts={Stage.PREPARE: {0}}, helper_key=HELPER_KEY)


def test_tensors_follow_the_spec_layout():
    tensors = {"a": np.full((2, 3), 0.1, np.float32), "b": np.full((4,), -0.2, np.float32)}
    spec = TensorSpec.from_tensors(tensors)
    cfg = VerifyConfig(spec, 1.0, HELPER_KEY.public_bytes)
    r = Round.start(2, cfg)
    for i in range(2):
        r.clients[i].set_tensors(tensors)
        r.leader.receive(r.clients[i].handle(r.requests[i]).to_bytes())
    result = r.finish()
    got = spec.unflatten(result.sum.astype(np.float32))
    unit = 2.0 ** -cfg.params.num_frac_bits
    assert np.allclose(got["a"], 0.2, atol=2 * unit) and np.allclose(got["b"], -0.4, atol=2 * unit)
    with pytest.raises(SpecMismatchError):
        r.clients[0].set_input(np.zeros(DIM + 1))


# ---------------------------------------------------------------------------- encoding
@settings(max_examples=60, deadline=None)
@given(
    values=st.lists(st.floats(-1e3, 1e3, allow_nan=False), min_size=1, max_size=40),
    bound=st.floats(0.01, 100.0),
    frac=st.integers(0, 20),
    weight=st.floats(0.001, 1.0),
)
def test_encoding_respects_the_bound_and_stays_within_two_units(values, bound, frac, weight):
    b = math.floor(math.ldexp(bound, frac))
    if b < 1:
        return
    x = np.asarray(values, dtype=np.float64)
    ints = encode_vector(x, bound=bound, frac_bits=frac, bound_int=b, weight=weight)
    assert squared_norm(ints) <= b * b
    clipped = clip_l2(x, b / 2.0**frac)[0] * weight  # the dp layer's clip (never above the target)
    assert np.max(np.abs(ints - np.ldexp(clipped, frac))) <= 2.0 + 1e-6


def test_encoding_refuses_what_it_cannot_encode():
    kw = dict(bound=1.0, frac_bits=8, bound_int=256)
    with pytest.raises(EncodingError):
        encode_vector(np.array([np.nan, 0.0]), **kw)
    with pytest.raises(EncodingError):
        encode_vector(np.array([1.01, 0.0]), clip=False, **kw)
    with pytest.raises(EncodingError):
        encode_vector(np.array([0.5]), weight=0.0, **kw)
    assert squared_norm(encode_vector(np.array([1.0, 0.0]), clip=False, **kw)) == 256**2


# ---------------------------------------------------------------------------- config
def test_config_bytes_are_canonical_and_bind_everything():
    same = config()
    assert same.to_bytes() == CONFIG.to_bytes() and same == CONFIG
    for change in (dict(l2_norm_bound=2.0), dict(min_reports=3), dict(noise_multiplier=1.0), dict(dimension=DIM + 1)):
        assert config(**change).digest() != CONFIG.digest()
    other = VerifyConfig.for_dimension(DIM, 1.0, X25519KeyPair.generate().public_bytes)
    assert other.digest() != CONFIG.digest()
    assert "helper_key" not in repr(CONFIG)


def test_config_picks_the_largest_feasible_scale_and_refuses_infeasible_ones():
    q = CONFIG.params.field.modulus
    assert 3 * CONFIG.bound**2 + 2 < q
    with pytest.raises(ValueError):
        config(num_frac_bits=CONFIG.params.num_frac_bits + 1)
    with pytest.raises(ValueError):
        config(l2_norm_bound=1e30)
    with pytest.raises(ValueError):
        config(min_reports=0)
    with pytest.raises(TypeError):
        config(clip=1)
    with pytest.raises(ValueError):
        VerifyConfig.for_dimension(4, 1.0, b"short")
    noisy = config(noise_multiplier=1e8)  # the noise tail needs room in the field
    assert noisy.params.num_frac_bits < CONFIG.params.num_frac_bits


def test_config_refuses_a_scale_whose_wraparound_check_is_unsound():
    # feasible for PineParams (q > 3 B^2 + 2, wr_check_bound^2 <= 4000 q), but a vector of norm
    # sqrt(q) would pass every wraparound check: the config needs q >= (9 wr_check_bound)^2
    with pytest.raises(ValueError, match="wraparound check is not sound"):
        config(num_frac_bits=19)
    wrb = CONFIG.params.wr_check_bound
    assert (9 * wrb) ** 2 <= CONFIG.params.field.modulus < (9 * 2 * wrb) ** 2


@pytest.mark.parametrize("d", [1, 17, 1000, 100_000])
def test_chunk_lengths_and_points_minimise_the_proofs_at_the_soundness_target(d):
    from fedcrypt.verify.vdaf import PineVdaf

    cfg = config(dimension=d)
    p = cfg.params
    q = p.field.modulus
    main, ne, queries = best_chunk_lengths(
        d, p.bit_checked_len, p.num_wr_checks, p.num_proofs, modulus=q, soundness_bits=64
    )
    assert (p.chunk_length, p.chunk_length_norm_equality, p.norm_equality_queries) == (main, ne, queries)
    assert cfg.norm_equality_error_log2 <= -64
    proofs = cfg.vdaf.proofs_len
    for c in (max(1, ne // 2), ne * 2):
        other = PineVdaf(dataclasses.replace(p, chunk_length_norm_equality=c))
        if other.flp_ne.soundness_error() <= 2.0**-64:
            assert other.proofs_len >= proofs
    draft = config(dimension=d, soundness_bits=0)
    assert draft.params.norm_equality_queries == 1  # the draft's FLP, its smallest proofs
    assert draft.vdaf.proofs_len <= proofs


@pytest.mark.parametrize("variant", ["Pine32HmacSha256Aes128", "Pine40HmacSha256Aes128"])
@pytest.mark.parametrize("d", [100_000, 1_000_000])
def test_the_norm_equality_proof_is_amplified_to_the_target(variant, d):
    """Attacker review 4: the draft proves the norm equality once (2^-24 .. 2^-32 per report);
    the round tests it at several points instead."""
    cfg = VerifyConfig.for_dimension(d, 1.0, HELPER_KEY.public_bytes, variant=variant)
    assert cfg.params.norm_equality_queries >= 2
    assert cfg.norm_equality_error_log2 <= -64
    with pytest.raises(ValueError):
        VerifyConfig.for_dimension(d, 1.0, HELPER_KEY.public_bytes, variant=variant, soundness_bits=129)


# ---------------------------------------------------------------------------- refusals
def test_leader_refusals_leave_the_round_as_it_was():
    r = Round.start(3)
    good = r.report(0)
    L = r.leader
    with pytest.raises(UnexpectedMessageError):  # another round
        L.receive(dataclasses.replace(good, round_id=1).to_bytes())
    with pytest.raises(UnexpectedMessageError):  # a client not asked
        L.receive(dataclasses.replace(good, client=7).to_bytes())
    with pytest.raises(UnexpectedMessageError):  # claimed by another sender
        L.receive(good.to_bytes(), sender=1)
    with pytest.raises(MalformedMessageError):
        L.receive(good.to_bytes()[:-1], sender=0)
    assert L.report.refused[0].startswith("MalformedMessageError")
    assert L.report.received == []
    L.receive(good.to_bytes())
    assert 0 not in L.report.refused
    with pytest.raises(UnexpectedMessageError):  # the same report again
        L.receive(good.to_bytes())
    twin = VerifyClient(CONFIG, 1)
    twin.set_input(vectors(1)[0])
    reused = dataclasses.replace(twin.handle(UploadRequest(0, 1)), report_id=good.report_id)
    with pytest.raises(UnexpectedMessageError):  # another client reusing a report id
        L.receive(reused.to_bytes())
    with pytest.raises(UnexpectedMessageError):  # a client message type the leader never takes
        L.receive(UploadRequest(0, 0).to_bytes())
    L.receive(r.report(1).to_bytes())
    L.receive(r.report(2).to_bytes())
    assert r.finish().count == 3
    with pytest.raises(LocalProtocolError):
        L.receive(good.to_bytes())
    with pytest.raises(LocalProtocolError):
        L.end_stage()


def test_client_refusals_and_state_bytes():
    client = VerifyClient(CONFIG, 3)
    with pytest.raises(LocalProtocolError):
        client.handle(UploadRequest(0, 3))
    client.set_input(vectors(1)[0])
    with pytest.raises(UnexpectedMessageError):
        client.handle(UploadRequest(0, 4))
    with pytest.raises(UnexpectedMessageError):
        client.handle(Report(0, 3, bytes(16), bytes(128), b"", bytes(188)))
    report = client.handle(UploadRequest(5, 3).to_bytes())
    assert isinstance(report, Report) and report.round_id == 5
    restored = VerifyClient.from_state_bytes(client.to_state_bytes(), config=CONFIG)
    assert restored.last_round == 5 and restored.client == 3
    restored.set_input(vectors(1)[0])
    for rid in (5, 4):  # the same round again, or an earlier one: a replay
        with pytest.raises(UnexpectedMessageError):
            restored.handle(UploadRequest(rid, 3))
    restored.handle(UploadRequest(6, 3))
    with pytest.raises(ContextMismatchError):
        VerifyClient.from_state_bytes(client.to_state_bytes(), config=config(min_reports=3))
    state = client.to_state_bytes()
    for bad in (state[:-1], state + b"\x00", b"XXXX" + state[4:], state[:-9] + b"\x02" + state[-8:]):
        with pytest.raises(MalformedMessageError):
            VerifyClient.from_state_bytes(bad, config=CONFIG)
    fresh = VerifyClient(CONFIG, 1)
    assert VerifyClient.from_state_bytes(fresh.to_state_bytes(), config=CONFIG).last_round is None
    with pytest.raises(TypeError):
        import pickle

        pickle.dumps(client)


def test_helper_refuses_replays_and_out_of_order_batches():
    r = Round.start(3)
    r.upload_all()
    (batch,) = r.leader.end_stage().values()
    assert isinstance(batch, PrepareRequest)
    with pytest.raises(UnexpectedMessageError):  # batch 1 before batch 0
        r.helper.handle(dataclasses.replace(batch, batch=1))
    with pytest.raises(UnexpectedMessageError):  # another round
        r.helper.handle(dataclasses.replace(batch, round_id=9))
    response = r.helper.handle(batch.to_bytes())
    with pytest.raises(UnexpectedMessageError):  # the same batch again
        r.helper.handle(batch.to_bytes())
    r.leader.receive(response.to_bytes())
    with pytest.raises(UnexpectedMessageError):  # the answer again
        r.leader.receive(response.to_bytes())
    (agg,) = r.leader.end_stage().values()
    share = r.helper.handle(agg.to_bytes())
    with pytest.raises(UnexpectedMessageError):  # one aggregate share per round
        r.helper.handle(agg.to_bytes())
    r.leader.receive(share.to_bytes())
    with pytest.raises(UnexpectedMessageError):
        r.leader.receive(share.to_bytes())
    assert r.leader.end_stage() == {} and r.leader.result.count == 3


def test_the_helper_takes_at_most_max_reports_in_a_round():
    cfg = config(max_reports=2, min_reports=1)
    r = Round.start(2, cfg)
    r.upload_all()
    (batch,) = r.leader.end_stage().values()
    r.helper.handle(PrepareRequest(0, 0, batch.entries[:1]))
    with pytest.raises(ProtocolViolationError):
        r.helper.handle(PrepareRequest(0, 1, batch.entries * 1 + batch.entries[:1]))
    assert [x.status for x in r.helper.handle(PrepareRequest(0, 1, batch.entries[1:])).results] == [Status.OK]


def test_a_repeated_report_in_a_later_batch_is_answered_replay():
    r = Round.start(3)
    r.upload_all()
    (batch,) = r.leader.end_stage().values()
    first = PrepareRequest(0, 0, batch.entries[:2])
    again = PrepareRequest(0, 1, (batch.entries[0], dataclasses.replace(batch.entries[2], client=1), batch.entries[2]))
    r.helper.handle(first)
    statuses = [x.status for x in r.helper.handle(again).results]
    assert statuses == [Status.REPLAY, Status.REPLAY, Status.OK]


def test_helper_refuses_decisions_other_than_its_own_then_answers_the_honest_request():
    r = Round.start(3)
    r.upload_all()
    r.leader.receive(r.helper.handle(r.leader.end_stage()[HELPER]))
    (agg,) = r.leader.end_stage().values()
    # a valid report called rejected: the differencing attack's first step (attacker review 4)
    dropped = AggregateRequest(0, tuple(dataclasses.replace(e, accepted=i != 0) for i, e in enumerate(agg.entries)))
    with pytest.raises(ProtocolViolationError, match="rejects client 0"):
        r.helper.handle(dropped)
    bad_share = bytearray(agg.entries[0].prep_share)
    bad_share[0] ^= 1
    lying = AggregateRequest(0, (LeaderPrep(agg.entries[0].client, agg.entries[0].report_id, True, bytes(bad_share)),) + agg.entries[1:])
    with pytest.raises(ProtocolViolationError, match="accepts client 0"):
        r.helper.handle(lying)
    with pytest.raises(ProtocolViolationError):
        r.helper.handle(AggregateRequest(0, agg.entries[1:]))
    assert r.helper.stage is Stage.PREPARE and r.helper.released_round is None
    r.leader.receive(r.helper.handle(agg))
    assert r.leader.end_stage() == {} and r.leader.result.count == 3
    assert r.helper.released_round == 0


def test_helper_refuses_a_sum_of_fewer_than_min_reports():
    r = Round.start(3, config(min_reports=3))
    r.leader.receive(r.report(0))
    forged = r.report(1)
    share = forged.decoded_leader_share(r.config)
    meas = share.meas_share.copy()
    meas[0] = (int(meas[0]) + 1) % r.config.params.field.modulus
    r.leader.receive(dataclasses.replace(forged, leader_share=dataclasses.replace(share, meas_share=meas).to_bytes(r.config.vdaf)))
    r.leader.receive(r.report(2))
    r.leader.receive(r.helper.handle(r.leader.end_stage()[HELPER]))
    with pytest.raises(RoundAbortedError):  # the leader itself stops at 2 accepted
        r.leader.end_stage()
    vdaf = r.config.vdaf
    entries = tuple(LeaderPrep(p.client, p.report_id, ok, p.prep_share.to_bytes(vdaf)) for p, ok in r.leader._decided)
    assert [e.accepted for e in entries] == [True, False, True]
    with pytest.raises(RoundAbortedError):
        r.helper.handle(AggregateRequest(0, entries))
    assert r.helper.released_round is None


def test_a_helper_refuses_a_round_at_or_before_its_last_release():
    """A leader cannot ask a restarted helper to release a round again (attacker review 4)."""
    from fedcrypt.verify import Helper

    for rid in (0, 3):
        with pytest.raises(UnexpectedMessageError, match="replayed round"):
            Helper(CONFIG, VERIFY_KEY, HELPER_KEY, round_id=rid, last_released_round=3)
    assert Helper(CONFIG, VERIFY_KEY, HELPER_KEY, round_id=4, last_released_round=3).released_round is None
    with pytest.raises(TypeError):
        Helper(CONFIG, VERIFY_KEY, HELPER_KEY, round_id=4)  # the helper service must say


def test_leader_refuses_a_helper_answer_for_other_reports_or_sets():
    r = Round.start(3)
    r.upload_all()
    batch = r.leader.end_stage()[HELPER]
    response = r.helper.handle(batch)
    with pytest.raises(ProtocolViolationError):
        r.leader.receive(dataclasses.replace(response, results=response.results[::-1]))
    r.leader.receive(response)
    agg = r.leader.end_stage()[HELPER]
    share = r.helper.handle(agg)
    with pytest.raises(ProtocolViolationError):
        r.leader.receive(dataclasses.replace(share, count=2))
    with pytest.raises(ProtocolViolationError):
        r.leader.receive(dataclasses.replace(share, set_digest=bytes(32)))
    r.leader.receive(share)
    assert r.leader.end_stage() == {}


def test_a_helper_that_never_answers_aborts_the_round():
    r = Round.start(2)
    r.upload_all()
    r.leader.end_stage()
    with pytest.raises(ProtocolViolationError):
        r.leader.end_stage()
    assert r.leader.stage is Stage.ABORTED and r.leader.report.aborted


def test_a_report_replayed_into_another_round_or_client_is_rejected():
    old = Round.start(3, round_id=0)
    stale = old.report(0)
    r = Round.start(3, round_id=1)
    r.leader.receive(dataclasses.replace(stale, round_id=1))  # well formed, but bound to round 0
    twin = VerifyClient(CONFIG, 2)
    twin.set_input(vectors(1)[0])
    r.leader.receive(dataclasses.replace(twin.handle(UploadRequest(1, 2)), client=1))  # client 2's report relabelled
    r.leader.receive(r.report(2))
    with pytest.raises(RoundAbortedError):
        r.finish()
    assert set(r.leader.report.rejected) == {0, 1}
    assert all("SEAL" in why for why in r.leader.report.rejected.values())


def test_messages_and_parties_never_show_secrets():
    r = Round.start(2)
    report = r.report(0)
    r.leader.receive(report)
    r.leader.receive(r.report(1))
    batch = r.leader.end_stage()[HELPER]
    response = r.helper.handle(batch)
    texts = " ".join(repr(x) + str(x) for x in (report, batch, response, r.leader, r.helper, r.clients[0], CONFIG))
    for secret in (report.leader_share, report.sealed_helper_share, response.results[0].prep_share, VERIFY_KEY):
        assert secret[:12].hex() not in texts
    assert "shares" not in repr(report) or "leader_share=" in repr(report)


@settings(max_examples=15, deadline=None)
@given(data=st.data())
def test_a_refused_message_changes_nothing(data):
    """Any damaged report or helper answer the leader refuses leaves the round as it was:
    the undamaged message then goes through and the sum is exact."""
    from fedcrypt.errors import FedcryptError

    r = Round.start(2)
    reports = [r.report(0), r.report(1)]
    target = data.draw(st.sampled_from(["report", "response"]))
    if target == "report":
        raw = bytearray(reports[0].to_bytes())
    else:
        for rep in reports:
            r.leader.receive(rep)
        batch = r.leader.end_stage()[HELPER]
        response = r.helper.handle(batch)
        raw = bytearray(response.to_bytes())
    i = data.draw(st.integers(0, len(raw) - 1))
    raw[i] ^= data.draw(st.integers(1, 255))
    cut = data.draw(st.sampled_from([len(raw), len(raw) - 1, i + 1]))
    before = repr(r.leader.report.received), r.leader.stage
    try:
        r.leader.receive(bytes(raw[:cut]))
    except FedcryptError:
        assert (repr(r.leader.report.received), r.leader.stage) == before
    else:
        return  # the damage decoded to another well-formed message: nothing to check here
    if target == "report":
        for rep in reports:
            r.leader.receive(rep)
        result = r.finish()
    else:
        r.leader.receive(response)
        agg = r.leader.end_stage()[HELPER]
        r.leader.receive(r.helper.handle(agg))
        r.leader.end_stage()
        result = r.leader.result
    assert result.count == 2
