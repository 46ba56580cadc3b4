@testable import BerthShim
import Testing

@Suite struct TextTests {
    @Test func decimalFormatsLikeDescription() {
        for value: Int64 in [0, 7, -7, 10, 4_194_304, .max, .min] {
            #expect(decimal(value) == String(value))
        }
    }

    @Test func containsBytesFindsSubstrings() {
        #expect("fifo:///run/x".containsBytes("://"))
        #expect(!"/run/containerd/fifo/x".containsBytes("://"))
        #expect("abc".containsBytes(""))
        #expect(!"ab".containsBytes("abc"))
        #expect("runc: container not running".containsBytes("not running"))
        #expect("é/ü".containsBytes("/ü"))
    }

    @Test func replacingBytesReplacesEveryOccurrence() {
        #expect("a//b///c".replacingBytes("//", with: "/") == "a/b//c")
        #expect("abc".replacingBytes("x", with: "y") == "abc")
        #expect(joinPath("/run/", "/ns/", "id") == "/run/ns/id")
    }
}
