#if canImport(Glibc)
import Glibc
#endif
import BerthCore
import BerthSystem
@testable import BerthRuntime
import Foundation
import Logging
import Synchronization
import Testing

@Suite("shim log FIFOs")
struct ShimLogTests {
    /// Collects what is logged, as "id: message" lines.
    final class Lines: @unchecked Sendable {
        let lines = Mutex<[String]>([])

        var logger: Logger {
            Logger(label: "test") { _ in Handler(sink: self) }
        }

        func waitFor(_ count: Int) -> [String] {
            for _ in 0..<500 {
                let now = lines.withLock { $0 }
                if now.count >= count { return now }
                usleep(10_000)
            }
            return lines.withLock { $0 }
        }

        struct Handler: LogHandler {
            let sink: Lines
            var metadata: Logger.Metadata = [:]
            var logLevel: Logger.Level = .trace
            subscript(metadataKey key: String) -> Logger.Metadata.Value? {
                get { metadata[key] }
                set { metadata[key] = newValue }
            }
            func log(level: Logger.Level, message: Logger.Message, metadata: Logger.Metadata?,
                     source: String, file: String, function: String, line: UInt) {
                sink.lines.withLock { $0.append("\(metadata?["id"] ?? "?"): \(message)") }
            }
        }
    }

    @Test func oneThreadDrainsEveryShimsLines() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("shimlog-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let sink = Lines()
        let poller = PollThread(name: "test-poll")
        let first = try ShimLog(path: directory + "/a", logger: sink.logger, namespace: "default", id: "a", poller: poller)
        let second = try ShimLog(path: directory + "/b", logger: sink.logger, namespace: "default", id: "b", poller: poller)

        let writerA = open(directory + "/a", O_WRONLY)
        let writerB = open(directory + "/b", O_WRONLY)
        #expect(writerA >= 0 && writerB >= 0)
        defer { close(writerA); close(writerB) }
        _ = "level=info msg=one\npart".withCString { write(writerA, $0, strlen($0)) }
        _ = "ial\n".withCString { write(writerA, $0, strlen($0)) }
        _ = "level=warning msg=two\n".withCString { write(writerB, $0, strlen($0)) }
        #expect(Set(sink.waitFor(3)) == ["a: shim: level=info msg=one", "a: shim: partial", "b: shim: level=warning msg=two"])

        // What was written before stop() is still copied; the FIFO is closed afterwards.
        _ = "last words".withCString { write(writerA, $0, strlen($0)) }
        first.stop()
        first.stop()  // a second stop must not close the descriptor again
        #expect(sink.waitFor(4).last == "a: shim: last words")
        second.stop()
    }
}
