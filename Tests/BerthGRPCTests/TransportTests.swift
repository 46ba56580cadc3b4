#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#endif
import BerthCore
@testable import BerthGRPC
import Dispatch
import Testing

/// `GRPCUnixTransport` on a real socket: path checks, the lock, the socket's mode, and PING
/// answering.
@Suite struct TransportTests {
    /// A fresh directory under /tmp, removed by the caller.
    static func makeTempDir() throws -> String {
        var template = Array("/tmp/berth-listener-XXXXXX".utf8CString)
        return try template.withUnsafeMutableBufferPointer { buffer in
            String(cString: try #require(mkdtemp(buffer.baseAddress!)))
        }
    }

    static func removeTree(_ path: String) {
        // Test-only cleanup of a tiny tree (socket, lock, one level of directories).
        for name in ["sub/berthd.sock", "sub/berthd.sock.lock", "sub", "x.sock.lock"] {
            unlink(path + "/" + name)
            rmdir(path + "/" + name)
        }
        rmdir(path)
    }

    @Test func pathLongerThanSunPathIsRejected() {
        let long = "/tmp/" + String(repeating: "a", count: 103)  // 108 bytes
        #expect(long.utf8.count == 108)
        do throws(BerthError) {
            _ = try GRPCUnixTransport(path: long)
            Issue.record("a 108-byte path was accepted")
        } catch {
            #expect(error.code == .invalidArgument)
            #expect(error.message.contains("107"))
        }
        #expect(throws: BerthError.self) { try GRPCUnixTransport.validate(path: "") }
    }

    @Test func lockHeldElsewhereFailsWithAClearError() throws {
        let dir = try Self.makeTempDir()
        defer { Self.removeTree(dir) }
        let socket = dir + "/x.sock"

        // Another open file description holding the lock stands in for another process.
        let fd = open(socket + ".lock", O_RDWR | O_CREAT | O_CLOEXEC, 0o600)
        #expect(fd >= 0)
        defer { close(fd) }
        #expect(flock(fd, LOCK_EX | LOCK_NB) == 0)

        do throws(BerthError) {
            _ = try GRPCUnixTransport(path: socket)
            Issue.record("a held lock was ignored")
        } catch {
            #expect(error.code == .unavailable)
            #expect(error.message.contains("another berthd is serving \(socket)"))
        }
    }

    @Test func servesWithModeLockAndAnsweredPings() async throws {
        let dir = try Self.makeTempDir()
        defer { Self.removeTree(dir) }
        let socket = dir + "/sub/berthd.sock"  // the parent does not exist yet

        // The process's own group: a chown any owner may do, so the test needs no root.
        let transport = try GRPCUnixTransport(path: socket, socketGroup: getgid())
        // Taking the lock again in this process is fine (a restarted server, a second transport).
        _ = try GRPCUnixTransport(path: socket)

        let listening = Task { try await transport.listen { _, _ in } }
        try await transport.waitUntilListening()

        var info = stat()
        #expect(stat(socket, &info) == 0)
        #expect(info.st_mode & 0o777 == 0o660)
        #expect(info.st_mode & S_IFMT == S_IFSOCK)
        #expect(info.st_gid == getgid())

        // The lock is held against other open file descriptions, i.e. other processes.
        let probe = open(socket + ".lock", O_RDWR | O_CLOEXEC)
        #expect(probe >= 0)
        #expect(flock(probe, LOCK_EX | LOCK_NB) != 0)
        close(probe)

        // 500 PINGs in one connection, as grpc-go's BDP estimation sends during a long upload.
        let count = 500
        let frames = try await Self.offThread { try Self.pingExchange(socket: socket, pings: count) }
        let acks = frames.filter { $0.type == 6 && $0.flags & 1 == 1 }
        #expect(!frames.contains { $0.type == 7 }, "server sent GOAWAY")
        try #require(acks.count == count)
        #expect(acks.map(\.payload) == (0..<count).map { Self.bytes(of: UInt64($0)) })

        transport.beginGracefulShutdown()
        try await listening.value
    }

    // MARK: A raw HTTP/2 client

    struct Frame {
        var type: UInt8
        var flags: UInt8
        var payload: [UInt8]
    }

    static func bytes(of value: UInt64) -> [UInt8] {
        (0..<8).map { UInt8(truncatingIfNeeded: value >> (56 - 8 * $0)) }
    }

    static func frame(type: UInt8, flags: UInt8 = 0, payload: [UInt8] = []) -> [UInt8] {
        let n = payload.count
        return [UInt8(truncatingIfNeeded: n >> 16), UInt8(truncatingIfNeeded: n >> 8), UInt8(truncatingIfNeeded: n),
                type, flags, 0, 0, 0, 0] + payload
    }

    /// Connects, sends the preface, SETTINGS and `pings` PINGs (opaque data 0, 1, ...), and reads
    /// frames until every PING is acknowledged, a GOAWAY arrives or 10 s pass.
    static func pingExchange(socket path: String, pings: Int) throws -> [Frame] {
        let fd = Glibc.socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        #expect(fd >= 0)
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            for (i, byte) in path.utf8.enumerated() { raw[i] = byte }
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        #expect(connected == 0, "connect: errno \(errno)")
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))

        var out = Array("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".utf8) + frame(type: 4)
        for i in 0..<pings { out += frame(type: 6, payload: bytes(of: UInt64(i))) }
        let sent = out.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        #expect(sent == out.count)

        var input: [UInt8] = []
        var frames: [Frame] = []
        var acks = 0
        var chunk = [UInt8](repeating: 0, count: 65536)
        while acks < pings, !frames.contains(where: { $0.type == 7 }) {
            let n = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            guard n > 0 else { break }  // EOF, or the timeout
            input += chunk[..<n]
            var index = 0
            while input.count - index >= 9 {
                let length = Int(input[index]) << 16 | Int(input[index + 1]) << 8 | Int(input[index + 2])
                guard input.count - index >= 9 + length else { break }
                let frame = Frame(type: input[index + 3], flags: input[index + 4],
                                  payload: Array(input[(index + 9)..<(index + 9 + length)]))
                if frame.type == 6, frame.flags & 1 == 1 { acks += 1 }
                frames.append(frame)
                index += 9 + length
            }
            input.removeFirst(index)
        }
        return frames
    }

    /// Runs blocking socket calls on a Dispatch thread, away from the cooperative pool that the
    /// server's connection handling needs.
    static func offThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global().async { continuation.resume(with: Result { try body() }) }
        }
    }
}
