"""The positive control of the model checker: the unmask rule before the review's fix.

``LegacyClient`` answers an unmask request as fedcrypt did before the consistency quorum and
the masking attestations: ``t`` signatures on the survivor set suffice, attestations are
ignored, and a survivor's self-mask share is revealed whatever its fate among its own
neighbours. Everything else is the real :class:`~fedcrypt.secagg.ClientProtocol`.
"""

from __future__ import annotations

from fedcrypt.crypto import ed25519_verify
from fedcrypt.errors import InvalidSignature
from fedcrypt.secagg import ClientProtocol, Stage, UnmaskRequest, UnmaskShares
from fedcrypt.secagg import keyschedule


class LegacyClient(ClientProtocol):
    """A deliberately weakened client: the rule that the outside review broke."""

    __slots__ = ()

    def _on_unmask_request(self, message: UnmaskRequest) -> UnmaskShares:
        survivors, dropped = set(message.survivors), set(message.dropped)
        if survivors & dropped:
            raise self._violation("both survived and dropped")
        self._check_survivors(message.survivors)
        if not (dropped & self._holders()) <= self._u2:
            raise self._violation("dropped a client that never shared keys here")
        if self.config.verify_survivors:
            if message.survivors != self._u3:
                raise self._violation("differs from the one this client signed")
            if not {v for v, _ in message.signatures} <= survivors:
                raise self._violation("a signer outside the survivor set")
            signed = keyschedule.consistency_bytes(
                round_id=self.round_id, context=self.context, directory=self.directory_digest, survivors=message.survivors
            )
            for v, signature in message.signatures:
                try:
                    ed25519_verify(self._verify_keys[v], signature, signed)
                except InvalidSignature:
                    raise InvalidSignature(f"client {v} did not sign this survivor set") from None
            if len(message.signatures) < self.config.threshold:
                raise self._abort("too few signatures")
        self_mask = tuple((v, self._shares[v][0].to_bytes()) for v in sorted(survivors & set(self._shares)))
        mask_key = tuple((v, self._shares[v][1].to_bytes()) for v in sorted(dropped & set(self._shares)))
        reply = UnmaskShares(self.round_id, self.client_id, self_mask, mask_key)
        self._shares = {}
        self._stage = Stage.DONE
        return reply
