#!/usr/bin/env python3
"""An independent ttrpc peer for BerthTTRPC's interop tests, written from the wire description
(10-byte big-endian frame header; protobuf Request/Response envelopes) with the standard library
only.

    ttrpc_peer.py server SOCKET   serve service berth.test.Echo on SOCKET until killed
    ttrpc_peer.py client SOCKET   exercise service berth.test.Swift served at SOCKET; prints
                                  "ok" and exits 0, or prints the failed check and exits 1
"""
import os
import signal
import socket
import struct
import sys
import threading
import time

REQUEST, RESPONSE, DATA = 1, 2, 3
REMOTE_CLOSED, REMOTE_OPEN, NO_DATA = 0x01, 0x02, 0x04
MAX_DATA = 4 << 20


# --- protobuf, by hand -------------------------------------------------------------------------

def varint(value):
    value &= (1 << 64) - 1  # negative int64/int32 values take ten bytes
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def field_varint(number, value):
    return varint(number << 3) + varint(value) if value else b""


def field_bytes(number, value, always=False):
    if not value and not always:
        return b""
    return varint(number << 3 | 2) + varint(len(value)) + value


def parse(data):
    """Yields (field number, wire type, value); skips nothing, so callers ignore what they don't know."""
    i = 0

    def read_varint():
        nonlocal i
        shift = result = 0
        while True:
            b = data[i]
            i += 1
            result |= (b & 0x7F) << shift
            if not b & 0x80:
                return result
            shift += 7

    while i < len(data):
        key = read_varint()
        number, wire = key >> 3, key & 7
        if wire == 0:
            yield number, wire, read_varint()
        elif wire == 1:
            yield number, wire, data[i:i + 8]
            i += 8
        elif wire == 2:
            n = read_varint()
            yield number, wire, data[i:i + n]
            i += n
        elif wire == 5:
            yield number, wire, data[i:i + 4]
            i += 4
        else:
            raise ValueError("wire type %d" % wire)


def encode_request(service, method, payload=b"", timeout_nano=0, metadata=()):
    out = field_bytes(1, service.encode()) + field_bytes(2, method.encode()) + field_bytes(3, payload)
    out += field_varint(4, timeout_nano)
    for key, value in metadata:
        out += field_bytes(5, field_bytes(1, key.encode()) + field_bytes(2, value.encode()), always=True)
    return out


def decode_request(data):
    request = {"service": "", "method": "", "payload": b"", "timeout_nano": 0, "metadata": []}
    for number, wire, value in parse(data):
        if number == 1 and wire == 2:
            request["service"] = value.decode()
        elif number == 2 and wire == 2:
            request["method"] = value.decode()
        elif number == 3 and wire == 2:
            request["payload"] = bytes(value)
        elif number == 4 and wire == 0:
            request["timeout_nano"] = value - (1 << 64) if value >= 1 << 63 else value
        elif number == 5 and wire == 2:
            key = val = ""
            for n, w, v in parse(value):
                if n == 1:
                    key = v.decode()
                elif n == 2:
                    val = v.decode()
            request["metadata"].append((key, val))
    return request


def encode_response(payload=b"", code=0, message=""):
    out = b""
    if code:
        out += field_bytes(1, field_varint(1, code) + field_bytes(2, message.encode()), always=True)
    return out + field_bytes(2, payload)


def decode_response(data):
    code, message, payload = 0, "", b""
    for number, wire, value in parse(data):
        if number == 1 and wire == 2:
            for n, w, v in parse(value):
                if n == 1:
                    code = v - (1 << 64) if v >= 1 << 63 else v
                elif n == 2:
                    message = v.decode()
        elif number == 2 and wire == 2:
            payload = bytes(value)
    return code, message, payload


# --- frames --------------------------------------------------------------------------------------

def header(length, stream_id, kind, flags=0):
    return struct.pack(">IIBB", length, stream_id, kind, flags)


def frame(stream_id, kind, data=b"", flags=0):
    return header(len(data), stream_id, kind, flags) + data


def recv_exact(sock, n):
    chunks = []
    while n:
        chunk = sock.recv(n)
        if not chunk:
            raise EOFError("connection closed")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def recv_frame(sock):
    length, stream_id, kind, flags = struct.unpack(">IIBB", recv_exact(sock, 10))
    return stream_id, kind, flags, recv_exact(sock, length)


# --- server --------------------------------------------------------------------------------------

def serve(path):
    if os.path.exists(path):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(16)
    # Exit with the test process: it holds our stdin open until it goes.
    threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
    print("ready", flush=True)
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve_connection, args=(conn,), daemon=True).start()


def serve_connection(conn):
    lock = threading.Lock()

    def reply(stream_id, data):
        with lock:
            conn.sendall(frame(stream_id, RESPONSE, data))

    try:
        while True:
            stream_id, kind, flags, data = recv_frame(conn)
            if kind != REQUEST:
                continue
            threading.Thread(target=handle, args=(stream_id, decode_request(data), reply), daemon=True).start()
    except (EOFError, OSError):
        conn.close()


def handle(stream_id, request, reply):
    if request["service"] != "berth.test.Echo":
        return reply(stream_id, encode_response(code=12, message="service " + request["service"]))
    method, payload = request["method"], request["payload"]
    if method == "Echo":
        reply(stream_id, encode_response(payload))
    elif method == "Metadata":
        lines = sorted("%s=%s" % kv for kv in request["metadata"])
        reply(stream_id, encode_response("\n".join(lines).encode()))
    elif method == "Timeout":
        reply(stream_id, encode_response(str(request["timeout_nano"]).encode()))
    elif method == "Sleep":
        time.sleep(int(payload.decode()) / 1000)
        reply(stream_id, encode_response(payload))
    elif method == "Fail":
        code, message = payload.decode().split(":", 1)
        reply(stream_id, encode_response(code=int(code), message=message))
    else:
        reply(stream_id, encode_response(code=12, message="method " + method))


# --- client --------------------------------------------------------------------------------------

class Check(Exception):
    pass


def expect(what, got, want):
    if got != want:
        raise Check("%s: got %r, want %r" % (what, got, want))


def call(sock, stream_id, method, payload=b"", service="berth.test.Swift", **extra):
    sock.sendall(frame(stream_id, REQUEST, encode_request(service, method, payload, **extra)))
    got_id, kind, flags, data = recv_frame(sock)
    expect("stream of reply to %s" % method, got_id, stream_id)
    expect("frame type of reply to %s" % method, kind, RESPONSE)
    return decode_response(data)


def run_client(path):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)

    expect("Echo", call(sock, 1, "Echo", b"hello"), (0, "", b"hello"))

    sock.sendall(frame(3, REQUEST, encode_request("berth.test.Swift", "Empty")))
    stream_id, kind, flags, data = recv_frame(sock)
    expect("Empty reply bytes", (stream_id, kind, flags, data), (3, RESPONSE, 0, b""))

    metadata = [("containerd-namespace-ttrpc", "ns1"), ("X-Trace", "a"), ("x-trace", "b")]
    expect("Metadata", call(sock, 5, "Metadata", metadata=metadata),
           (0, "", b"containerd-namespace-ttrpc=ns1\nx-trace=a,b"))

    code, message, payload = call(sock, 7, "Deadline", timeout_nano=5_000_000_000)
    expect("Deadline code", code, 0)
    if not 0 < int(payload) <= 5000:
        raise Check("Deadline: handler saw %r ms left" % payload)

    expect("NotFound", call(sock, 9, "NotFound"), (5, "container c1: not found", b""))
    expect("unknown method", call(sock, 11, "Nope"), (12, "method Nope", b""))
    expect("unknown service", call(sock, 13, "Nope", service="nope.Svc"), (12, "service nope.Svc", b""))

    # An unknown envelope field (99, varint) and an unknown frame type are both ignored.
    sock.sendall(frame(15, 9, b"junk"))
    request = encode_request("berth.test.Swift", "Echo", b"x") + field_varint(99, 7)
    sock.sendall(frame(15, REQUEST, request))
    expect("unknown field", recv_frame(sock), (15, RESPONSE, 0, encode_response(b"x")))

    # Block holds its handler; Echo on the same connection must still be answered first.
    sock.sendall(frame(17, REQUEST, encode_request("berth.test.Swift", "Block")))
    expect("Echo while Block runs", call(sock, 19, "Echo", b"during"), (0, "", b"during"))
    sock.sendall(frame(21, REQUEST, encode_request("berth.test.Swift", "Release")))
    replies = sorted(recv_frame(sock)[0] for _ in range(2))
    expect("Block and Release replies", replies, [17, 21])

    # A header that arrives one byte at a time.
    data = frame(23, REQUEST, encode_request("berth.test.Swift", "Echo", b"split"))
    for i in range(len(data)):
        sock.sendall(data[i:i + 1])
        if i < 12:
            time.sleep(0.01)
    expect("split frame", decode_response(recv_frame(sock)[3]), (0, "", b"split"))

    # ttrpc 1.2 stream ID rules.
    expect("even stream", call(sock, 24, "Echo", b"e"),
           (3, "StreamID must be odd for client initiated streams", b""))
    expect("reused stream", call(sock, 1, "Echo", b"r"),
           (3, "StreamID cannot be re-used and must increment", b""))

    # An oversized frame is discarded and answered; the connection stays usable.
    length = MAX_DATA + 1
    sock.sendall(header(length, 25, REQUEST) + b"\0" * length)
    expect("oversized", decode_response(recv_frame(sock)[3]),
           (8, "message length %d exceed maximum message size of %d" % (length, MAX_DATA), b""))
    expect("Echo after oversized", call(sock, 27, "Echo", b"still"), (0, "", b"still"))

    # Server streaming: Request with remote-closed, data frames, then Data[RC|NO_DATA].
    sock.sendall(frame(29, REQUEST, encode_request("berth.test.Swift", "Count", b"3"), REMOTE_CLOSED))
    got = [recv_frame(sock) for _ in range(4)]
    expect("Count stream", got, [(29, DATA, 0, b"0"), (29, DATA, 0, b"1"), (29, DATA, 0, b"2"),
                                 (29, DATA, REMOTE_CLOSED | NO_DATA, b"")])

    # Client streaming: Request with remote-open, data frames, close with Data[RC|NO_DATA].
    sock.sendall(frame(31, REQUEST, encode_request("berth.test.Swift", "Join", b"a"), REMOTE_OPEN))
    sock.sendall(frame(31, DATA, b"b"))
    sock.sendall(frame(31, DATA, b"c"))
    sock.sendall(frame(31, DATA, b"", REMOTE_CLOSED | NO_DATA))
    got = [recv_frame(sock) for _ in range(2)]
    expect("Join stream", got, [(31, DATA, 0, b"abc"), (31, DATA, REMOTE_CLOSED | NO_DATA, b"")])

    # A streaming handler's error ends the stream with a Response.
    sock.sendall(frame(33, REQUEST, encode_request("berth.test.Swift", "Count", b"-1"), REMOTE_CLOSED))
    stream_id, kind, flags, data = recv_frame(sock)
    expect("Count error", (stream_id, kind, decode_response(data)),
           (33, RESPONSE, (3, "count -1: must not be negative", b"")))

    sock.close()
    print("ok", flush=True)


if __name__ == "__main__":
    # The test process may spawn us from a thread that blocks signals; take SIGTERM as usual.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGTERM, signal.SIGINT])
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if len(sys.argv) != 3 or sys.argv[1] not in ("server", "client"):
        sys.exit(__doc__)
    if sys.argv[1] == "server":
        serve(sys.argv[2])
    else:
        try:
            run_client(sys.argv[2])
        except Exception as error:  # a failed check or a broken connection
            print("FAIL: %s" % error, flush=True)
            sys.exit(1)
