#if canImport(Glibc)
import Glibc
#endif
import BerthCore
@testable import BerthRuntime
import Foundation
import Testing

/// A shim action is run as a real process (`/bin/sh`): its output, exit status and deadline.
@Suite("shim start and delete actions")
struct ShimCommandTests {
    func command(_ script: String, stdin: [UInt8] = [], combineOutput: Bool = false,
                 timeout: Duration = .seconds(10)) -> ShimCommand {
        ShimCommand(binary: "/bin/sh", arguments: ["-c", script], directory: "/", environment: ["PATH": "/usr/bin:/bin"],
                    stdin: stdin, combineOutput: combineOutput, timeout: timeout)
    }

    @Test func stdinReachesTheActionAndBothOutputsComeBackApart() async throws {
        let output = try await command("cat; echo oops >&2; exit 3", stdin: Array("options".utf8)).run()
        #expect(output.stdoutText == "options")
        #expect(output.stderrText == "oops")
        #expect(output.status == 3)
        #expect(!output.timedOut && !output.succeeded)
    }

    @Test func combinedOutputKeepsBothStreams() async throws {
        let output = try await command("echo unix:///run/x.sock; echo warning >&2", combineOutput: true).run()
        #expect(output.stdoutText == "unix:///run/x.sock\nwarning")
        #expect(output.stderr.isEmpty)
        #expect(output.succeeded)
    }

    @Test func aSignalIsReportedAs128PlusItsNumber() async throws {
        let output = try await command("kill -TERM $$").run()
        #expect(output.status == 128 + SIGTERM)
        #expect(!output.timedOut)
    }

    @Test func anActionThatOverstaysIsKilledAtTheDeadline() async throws {
        let start = ContinuousClock.now
        let output = try await command("echo started; exec sleep 30", timeout: .milliseconds(300)).run()
        #expect(ContinuousClock.now - start < .seconds(10))
        #expect(output.timedOut)
        #expect(output.status == 128 + SIGKILL)
        #expect(output.stdoutText == "started")
    }

    /// A child the action leaves behind with its output open must not hold the caller past the
    /// deadline (end of file would come only when that child exits, here after 5 s).
    @Test func aChildThatKeepsTheOutputOpenDoesNotStallTheCaller() async throws {
        let start = ContinuousClock.now
        let output = try await command("sleep 5 & echo done", timeout: .milliseconds(500)).run()
        #expect(ContinuousClock.now - start < .seconds(4))
        #expect(output.timedOut)
        #expect(output.stdoutText == "done")
    }

    @Test func aMissingBinaryIsAnError() async throws {
        let missing = ShimCommand(binary: "/nonexistent/berth-shim", arguments: ["start"], directory: "/", environment: [:],
                                  combineOutput: true, timeout: .seconds(5))
        await #expect(throws: BerthError.self) { try await missing.run() }
    }
}
