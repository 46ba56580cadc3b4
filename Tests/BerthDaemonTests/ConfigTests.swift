@testable import BerthDaemon
import BerthCore
import Testing

@Suite("config file")
struct ConfigTests {
    @Test("runtimes map a runtime name to its shim binary")
    func runtimes() throws {
        let config = try Config.parse("""
        version = 2
        [runtimes."io.containerd.runc.v2"]
          shim = "/usr/bin/containerd-shim-runc-v2"
        [runtimes."io.containerd.kata.v2"]
          shim = "containerd-shim-kata-v2"
        """)
        #expect(config.runtimes == ["io.containerd.runc.v2": .init(shim: "/usr/bin/containerd-shim-runc-v2"),
                                    "io.containerd.kata.v2": .init(shim: "containerd-shim-kata-v2")])
        #expect(throws: BerthError.self) { try Config.parse("[runtimes.\"x\"]\nshim = \"\"\n") }
    }

    @Test("the default text parses back to the defaults and documents runtimes")
    func defaultText() throws {
        #expect(try Config.parse(Config.defaultText) == Config())
        #expect(Config.defaultText.contains(#"[runtimes."io.containerd.runc.v2"]"#))
    }
}
