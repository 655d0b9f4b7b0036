"""The README's example: one-way messages and a request/reply between two messengers in one process.

Run it with ``python examples/hello.py``; tests/test_readme_example.py keeps README.md and this file
identical and checks what it prints.
"""
from msgr import Config, Dispatcher, EntityAddr, EntityName, Messenger, Policy, RpcClient, reply_to
from msgr.messages import MPing


class PingServer(Dispatcher):
    def ms_dispatch(self, msg):                  # runs on the server's dispatch thread
        print("server got", type(msg).__name__, "tid", msg.tid, "from", msg.get_connection().peer_name)
        if msg.tid:                              # a request: the reply carries its tid
            reply_to(msg, MPing())
        return True


server = Messenger.create(EntityName.osd(0), nonce=1, config=Config())
server.set_default_policy(Policy.stateless_server())
addr = server.bind(EntityAddr.parse("v1:127.0.0.1:0"))
server.add_dispatcher_tail(PingServer())
server.start()

rpc = RpcClient(timeout=5.0)                     # matches replies to requests by tid
client = Messenger.create(EntityName.client(4100), nonce=2)
client.set_default_policy(Policy.lossy_client())
client.add_dispatcher_head(rpc)
client.start()

conn = client.connect_to(EntityName.TYPE_OSD, addr)
conn.send_message(MPing())                       # one-way: returns at once, tid 0
reply = rpc.call(conn, MPing()).result()         # request/reply: a Future of the reply
print("client got", type(reply).__name__, "tid", reply.tid, "from", reply.get_connection().peer_name)

# pymsgr's threads are daemons: wait for the work to be done before the script ends
print("flushed:", conn.flush(timeout=5.0))       # everything sent on conn is written
client.shutdown(linger=1.0)                      # flushes anything still queued (up to 1 s), closes
server.shutdown()
client.wait()
server.wait()
