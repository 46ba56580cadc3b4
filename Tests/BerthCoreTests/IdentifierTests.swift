import BerthCore
import Testing

@Suite("Identifier")
struct IdentifierTests {
    @Test(arguments: [
        "a", "Z", "0", "default", "k8s.io", "moby", "a-b_c.d", "A1-b2.C3_d4", "1.2.3", "abc123XYZ",
        String(repeating: "a", count: 76),
        String(repeating: "a.", count: 37) + "bc",  // 76 characters, separators in between
    ])
    func accepts(value: String) {
        #expect(throws: Never.self) { try Identifier.validate(value, field: "test id") }
    }

    @Test(arguments: [
        ".a", "a.", "-a", "a-", "_a", "a_", "a..b", "a._b", "a-_b", "a b", " a", "a/b", "a:b", "a+b",
        "ä", "a\u{0}", "a\n", ".", "-", "--",
    ])
    func rejectsPattern(value: String) {
        let error = #expect(throws: BerthError.self) { try Identifier.validate(value, field: "test id") }
        #expect(error?.code == .invalidArgument)
        #expect(error?.message.hasPrefix("test id ") == true, "\(error?.message ?? "")")
        #expect(error?.message.contains("must match") == true, "\(error?.message ?? "")")
    }

    @Test func rejectsEmpty() {
        let error = #expect(throws: BerthError.self) { try Identifier.validate("", field: "container id") }
        #expect(error?.code == .invalidArgument)
        #expect(error?.message == "container id: identifier must not be empty")
    }

    @Test func maximumLengthIs76() {
        #expect(Identifier.maxLength == 76)
        let error = #expect(throws: BerthError.self) {
            try Identifier.validate(String(repeating: "a", count: 77), field: "container id")
        }
        #expect(error?.code == .invalidArgument)
        #expect(error?.message.contains("longer than 76") == true, "\(error?.message ?? "")")
    }

    @Test func lengthIsCountedInBytes() {
        // 75 ASCII letters and one two-byte character: 77 bytes, refused for length or pattern.
        let error = #expect(throws: BerthError.self) {
            try Identifier.validate(String(repeating: "a", count: 75) + "é", field: "id")
        }
        #expect(error?.code == .invalidArgument)
    }
}

@Suite("Namespace")
struct NamespaceTests {
    @Test func validNames() throws {
        #expect(try Namespace("default").name == "default")
        #expect(try Namespace("k8s.io").description == "k8s.io")
        #expect(Namespace.default.name == "default")
        #expect(try Namespace("default") == Namespace.default)
    }

    @Test(arguments: ["", "-x", "x/y", "has space", String(repeating: "n", count: 77)])
    func invalidNames(name: String) {
        let error = #expect(throws: BerthError.self) { try Namespace(name) }
        #expect(error?.code == .invalidArgument)
        #expect(error?.message.hasPrefix("namespace") == true, "\(error?.message ?? "")")
    }

    @Test func trustedSkipsValidation() {
        #expect(Namespace(trusted: "anything goes").name == "anything goes")
    }

    @Test func ordering() throws {
        let names = try ["moby", "default", "k8s.io"].map { try Namespace($0) }
        #expect(names.sorted().map(\.name) == ["default", "k8s.io", "moby"])
    }
}

@Suite("Labels")
struct LabelsTests {
    @Test func acceptsUpToTheLimit() {
        #expect(Labels.maxSize == 4096)
        let key = "k"
        let value = String(repeating: "v", count: 4095)
        #expect(throws: Never.self) { try Labels.validate([key: value]) }
        #expect(throws: Never.self) { try Labels.validate([:]) }
        #expect(throws: Never.self) { try Labels.validate(["k": ""]) }
    }

    @Test func refusesOneByteOver() {
        let key = "io.example/key"
        let value = String(repeating: "v", count: 4096 - key.utf8.count + 1)
        let error = #expect(throws: BerthError.self) { try Labels.validate(["ok": "fine", key: value]) }
        #expect(error?.code == .invalidArgument)
        let message = error?.message ?? ""
        #expect(message.contains("greater than maximum size (4096 bytes)"), "\(message)")
        #expect(message.contains("4097 bytes"), "\(message)")
        #expect(message.contains("key: io.example/key"), "\(message)")
    }

    @Test func sizeIsCountedInBytes() {
        // 2048 two-byte characters are 4096 bytes.
        let value = String(repeating: "é", count: 2047)
        #expect(throws: Never.self) { try Labels.validate(["ab": value]) }
        let error = #expect(throws: BerthError.self) { try Labels.validate(["abc": value]) }
        #expect(error?.code == .invalidArgument)
    }

    @Test func longKeyIsTruncatedInTheMessage() {
        let key = String(repeating: "k", count: 5000)
        let error = #expect(throws: BerthError.self) { try Labels.validate([key: ""]) }
        #expect(error?.code == .invalidArgument)
        #expect((error?.message.utf8.count ?? .max) < 300, "the message quotes at most a prefix of the key")
    }

    @Test func emptyKeyIsRefused() {
        let error = #expect(throws: BerthError.self) { try Labels.validate(["": "v"]) }
        #expect(error?.code == .invalidArgument)
        #expect(error?.message.contains("key") == true)
    }

    @Test func wireNames() {
        #expect(Labels.gcRoot == "containerd.io/gc.root")
        #expect(Labels.gcExpire == "containerd.io/gc.expire")
        #expect(Labels.gcRefContentPrefix == "containerd.io/gc.ref.content")
        #expect(Labels.gcRefSnapshotPrefix == "containerd.io/gc.ref.snapshot.")
    }
}
