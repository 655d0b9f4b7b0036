"""MonMap: the monitor map inside MMonMap, in the encodings a pacific mon sends.

Which encoding the monitor picks depends on the session's features:

* no MONNAMES:        u16 v=1, fsid, epoch, vector<entity_inst_t>, last_changed, created
* no MONENC:          u16 v=2, fsid, epoch, map<string, entity_addr_t>, last_changed, created
* no SERVER_NAUTILUS: ENCODE_START(5, 3) {fsid, epoch, map<string, entity_addr_t>,
                      last_changed, created, persistent/optional features}
* otherwise:          ENCODE_START(9, 6) {fsid, epoch, last_changed, created, persistent and
                      optional features, map<string, mon_info_t>, ranks, min_mon_release,
                      removed_ranks, election_strategy, disallowed_leaders,
                      stretch_mode_enabled, tiebreaker_mon, stretch_marked_down_mons}

The field order of the last two was checked against a real 16.2.15 monitor's MMonMap.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from msgr.encoding import Decoder, Encoder, Utime, dec_s32, dec_string, enc_s32, enc_string
from msgr.entity import EntityAddr, EntityName
from msgr.errors import DecodeError
from msgr.features import MONENC, MONNAMES, SERVER_NAUTILUS, has_feature

MONMAP_V = 9
MONMAP_COMPAT = 6
MON_INFO_V = 5


@dataclass(slots=True)
class MonInfo:
    """``mon_info_t``: one monitor's name, addresses, priority, weight and crush location."""

    name: str = ""
    addrs: list[EntityAddr] = field(default_factory=list)
    priority: int = 0
    weight: int = 0
    crush_loc: dict[str, str] = field(default_factory=dict)

    def legacy_addr(self) -> EntityAddr:
        """The v1 address (what old encodings carry), or a blank one."""
        return next((a for a in self.addrs if a.type == EntityAddr.TYPE_LEGACY),
                    self.addrs[0] if self.addrs else EntityAddr())

    def encode(self, e: Encoder, features: int) -> None:
        with e.versioned(MON_INFO_V, 1):
            e.string(self.name).entity_addrvec(self.addrs, features)
            e.u16(self.priority).u16(self.weight)
            e.map(self.crush_loc, enc_string, enc_string)

    @classmethod
    def decode(cls, d: Decoder) -> MonInfo:
        with d.versioned(MON_INFO_V, "mon_info_t") as v:
            info = cls(d.string(), d.entity_addrvec())
            if v >= 2:
                info.priority = d.u16()
            if v >= 4:
                info.weight = d.u16()
            if v >= 5:
                info.crush_loc = d.map(dec_string, dec_string, 8)
        return info


def _dec_features(d: Decoder) -> int:
    with d.versioned(1, "mon_feature_t"):
        return d.u64()


def _enc_features(e: Encoder, features: int) -> None:
    with e.versioned(1, 1):
        e.u64(features)


@dataclass(slots=True)
class MonMap:
    """The parts of Ceph's MonMap that clients use (all fields of the v9 encoding)."""

    fsid: uuid.UUID = field(default_factory=lambda: uuid.UUID(int=0))
    epoch: int = 0
    last_changed: Utime = Utime()
    created: Utime = Utime()
    persistent_features: int = 0
    optional_features: int = 0
    mons: dict[str, MonInfo] = field(default_factory=dict)
    ranks: list[str] = field(default_factory=list)
    min_mon_release: int = 0
    removed_ranks: set[int] = field(default_factory=set)
    election_strategy: int = 1
    disallowed_leaders: set[str] = field(default_factory=set)
    stretch_mode_enabled: bool = False
    tiebreaker_mon: str = ""
    stretch_marked_down_mons: set[str] = field(default_factory=set)
    #: the encoding it was decoded from: "v1", "v2", "5", "9", ... (for display and tests)
    encoding: str = ""

    # --- queries -----------------------------------------------------------
    def rank_names(self) -> list[str]:
        """Monitor names in rank order (ranks if known, else sorted by address like Ceph)."""
        if self.ranks:
            return list(self.ranks)
        return sorted(self.mons, key=lambda n: (self.mons[n].legacy_addr().ip,
                                                self.mons[n].legacy_addr().port, n))

    def summary(self) -> dict[str, Any]:
        return {"fsid": str(self.fsid), "epoch": self.epoch,
                "mons": [{"rank": r, "name": n, "addrs": [str(a) for a in self.mons[n].addrs]}
                         for r, n in enumerate(self.rank_names()) if n in self.mons]}

    # --- decoding ------------------------------------------------------------
    @classmethod
    def decode(cls, buf: bytes | bytearray | memoryview) -> MonMap:
        d = Decoder(buf, what="MonMap")
        d.need(2)
        if d.buf[d.pos] in (1, 2) and d.buf[d.pos + 1] == 0:
            return cls._decode_legacy(d)
        m = cls()
        with d.versioned(MONMAP_V, "MonMap") as v:
            m.encoding = str(v)
            m.fsid = d.uuid()
            m.epoch = d.u32()
            if v < 6:
                for name, addr in d.map(dec_string, Decoder.entity_addr, 5).items():
                    m.mons[name] = MonInfo(name, [addr])
            m.last_changed = d.utime()
            m.created = d.utime()
            if v >= 4:
                m.persistent_features = _dec_features(d)
                m.optional_features = _dec_features(d)
            if v >= 6:
                m.mons = d.map(dec_string, MonInfo.decode, 11)
                m.ranks = d.list(dec_string, 4)
            if v >= 7:
                m.min_mon_release = d.u8()
            if v >= 8:
                m.removed_ranks = d.set(dec_s32, 4)
                m.election_strategy = d.u8()
                m.disallowed_leaders = d.set(dec_string, 4)
            if v >= 9:
                m.stretch_mode_enabled = d.bool()
                m.tiebreaker_mon = d.string()
                m.stretch_marked_down_mons = d.set(dec_string, 4)
        return m

    @classmethod
    def _decode_legacy(cls, d: Decoder) -> MonMap:
        v = d.u16()
        m = cls(encoding=f"v{v}")
        m.fsid = d.uuid()
        m.epoch = d.u32()
        if v == 1:
            # vector<entity_inst_t>: names are the ranks
            n = d.length(9 + 7, "mon count")  # the addr is legacy (136) or marker form
            for _ in range(n):
                inst_name = d.entity_name()
                addr = d.entity_addr()
                m.mons[str(inst_name.num)] = MonInfo(str(inst_name.num), [addr])
            m.ranks = list(m.mons)
        else:
            for name, addr in d.map(dec_string, Decoder.entity_addr, 5).items():
                m.mons[name] = MonInfo(name, [addr])
        m.last_changed = d.utime()
        m.created = d.utime()
        return m

    # --- encoding --------------------------------------------------------------
    def encode(self, features: int) -> bytes:
        """Encode as a pacific monitor would for a peer with ``features``."""
        e = Encoder()
        if not has_feature(features, MONNAMES):
            e.u16(1).uuid(self.fsid).u32(self.epoch)
            names = self.rank_names()
            e.u32(len(names))
            for rank, name in enumerate(names):
                e.entity_name(EntityName(EntityName.TYPE_MON, rank))
                e.entity_addr(self.mons[name].legacy_addr(), features)
            return e.utime(self.last_changed).utime(self.created).getvalue()
        legacy = {n: i.legacy_addr() for n, i in self.mons.items()}
        if not has_feature(features, MONENC):
            e.u16(2).uuid(self.fsid).u32(self.epoch)
            e.map(legacy, enc_string, lambda e, a: e.entity_addr(a, features))
            return e.utime(self.last_changed).utime(self.created).getvalue()
        if not has_feature(features, SERVER_NAUTILUS):
            with e.versioned(5, 3):
                e.uuid(self.fsid).u32(self.epoch)
                e.map(legacy, enc_string, lambda e, a: e.entity_addr(a, features))
                e.utime(self.last_changed).utime(self.created)
                _enc_features(e, self.persistent_features)
                _enc_features(e, self.optional_features)
            return e.getvalue()
        with e.versioned(MONMAP_V, MONMAP_COMPAT):
            e.uuid(self.fsid).u32(self.epoch).utime(self.last_changed).utime(self.created)
            _enc_features(e, self.persistent_features)
            _enc_features(e, self.optional_features)
            e.map(self.mons, enc_string, lambda e, i: i.encode(e, features))
            e.list(self.rank_names(), enc_string)
            e.u8(self.min_mon_release)
            e.set(self.removed_ranks, enc_s32)
            e.u8(self.election_strategy)
            e.set(self.disallowed_leaders, enc_string)
            e.bool(self.stretch_mode_enabled).string(self.tiebreaker_mon)
            e.set(self.stretch_marked_down_mons, enc_string)
        return e.getvalue()


def check_ranks(m: MonMap) -> None:
    """Raise DecodeError when ranks name monitors the map does not hold."""
    missing = [r for r in m.ranks if r not in m.mons]
    if missing:
        raise DecodeError(f"MonMap: ranks name unknown monitors {missing}")
