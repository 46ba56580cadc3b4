@testable import BerthShim
import Testing

@Suite struct BinaryLoggerTests {
    @Test func parsesPathAndQueryIntoArguments() {
        let logger = BinaryLogger(uri: "binary:///usr/local/bin/log%20driver?tag=web&debug&level=")
        #expect(logger?.path == "/usr/local/bin/log driver")
        #expect(logger?.arguments == ["tag", "web", "debug", "level"])
        #expect(BinaryLogger(uri: "binary:///bin/logger")?.arguments == [])
    }

    @Test func refusesOtherURIs() {
        #expect(BinaryLogger(uri: "file:///var/log/x") == nil)
        #expect(BinaryLogger(uri: "binary://relative/path") == nil)
        #expect(BinaryLogger(uri: "/run/containerd/fifo/1-stdout") == nil)
    }
}
