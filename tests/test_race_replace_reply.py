"""A session being replaced does not answer the reply to its own connect (issue 11).

tests/test_race_stress.py ``test_race[lossless_peer-1w-nodelay-markdown]`` livelocked (an accept storm,
no message through) whenever the start of an accepted session ran without a posted event in between.
Both sides reconnected at the same instant, a with connect_seq k+1, b with k:

* a's acceptor read b's connect (k < k+1): row 15, RETRY_SESSION(k+2) on b's socket;
* b's acceptor read a's connect (k+1 > k): row 20, b's session is marked replacing, its adopt_socket
  posted;
* before that post ran, b's session read the RETRY_SESSION on its own socket and sent one more connect
  (connect_seq k+2) there; only then did it adopt a's socket and close its own;
* a's acceptor read that connect (k+2 > k+1): row 20 again, a's session dropped its own socket, the
  one b had just adopted, for b's, which b had just closed.

Both adopted sockets died, both sessions faulted from an accepting state, reconnected at once (no
backoff) with the roles swapped, and did it again. Ceph sets the existing session's state to NONE when
it decides a replace, so nothing more is read on its old socket; here the reply is not acted on while
the session is marked replacing.
"""
from __future__ import annotations

from test_protocol_support import MON, PEER_ADDR, RawPeer, connect_msg, mon_host

from msgr.entity import EntityAddr
from msgr.features import CEPH_FEATURES_ALL_PACIFIC
from msgr.policy import Policy
from msgr.protocol.actions import ReplaceExisting
from msgr.protocol.protocol_v1 import ProtocolV1
from msgr.protocol.states import State
from msgr.wire import BANNER, ConnectMsg, ConnectReply, Tag, proto_version

OUR_SOCK = EntityAddr.parse("v1:127.0.0.1:50000/0")


def test_a_session_being_replaced_sends_no_connect_on_its_old_socket():
    host = mon_host()
    host.policies[MON] = Policy.lossless_peer()          # no resetcheck: connect_seq 1 against 0 is row 20
    e = ProtocolV1(host)
    e.start_connect(PEER_ADDR, MON, 0)
    e.on_connected(OUR_SOCK, 0)
    e.take_output()
    e.receive_data(BANNER + PEER_ADDR.encode_legacy() + OUR_SOCK.encode_legacy(), 0)
    sent = b"".join(bytes(b) for b in e.take_output())
    first = ConnectMsg.unpack(sent, len(host.get_myaddr().encode_legacy()))
    assert e.state is State.CONNECTING_WAIT_CONNECT_REPLY and first.connect_seq == 0

    peer = RawPeer(host, claimed=PEER_ADDR)              # the peer's newer attempt, accepted meanwhile
    acts = peer.proto.receive_data(connect_msg(cseq=1, gseq=30), 0)
    assert peer.proto.last_decision.row == 20
    replace = [a for a in acts if isinstance(a, ReplaceExisting)]
    assert len(replace) == 1 and replace[0].existing is e and e._replacing

    # the adopt is posted; before it runs, e's own socket brings the answer to e's connect
    reply = ConnectReply(Tag.RETRY_SESSION, CEPH_FEATURES_ALL_PACIFIC, 0, 2, proto_version(MON, MON, True), 0, 0)
    e.receive_data(reply.pack(), 0)
    assert e.take_output() == [] and e.connect_seq == 0, "a replaced session answered its peer's reply"

    # the replace then goes on as before: the adopted socket gets RETRY_GLOBAL, the retry opens
    e.adopt_socket(PEER_ADDR, host.get_myaddr(), 0, replace[0].reset_session)
    out = b"".join(bytes(b) for b in e.take_output())
    assert Tag(ConnectReply.unpack(out).tag) is Tag.RETRY_GLOBAL
    e.receive_data(connect_msg(cseq=1, gseq=31), 0)
    r = ConnectReply.unpack(b"".join(bytes(b) for b in e.take_output()))
    assert Tag(r.tag) in (Tag.SEQ, Tag.READY) and r.connect_seq == 2 and host.lookup_conn(PEER_ADDR) is e
