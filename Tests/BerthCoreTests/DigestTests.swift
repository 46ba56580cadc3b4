import BerthCore
import Foundation
import Testing

@Suite("Digest")
struct DigestTests {
    static let helloSHA256 = "b94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9"
    static let helloSHA384 = "fdbd8e75a67f29f701a4e040385e2e23986303ea10239211af907fcbb83578b3e417cb71ce646efd0819dd8c088de1bd"
    static let helloSHA512 = "309ecc489c12d6eb4cc40f50c902f2b4d0ed77ee511a7c7a9bcd3ca86d4cd86f989dd35bc5ff499670da34255b45b0cfd830e81f605dcf7dc5542e93ae9cd76f"

    @Test func parsesSHA256() throws {
        let digest = try Digest(parsing: "sha256:\(Self.helloSHA256)")
        #expect(digest.algorithm == .sha256)
        #expect(digest.encoded == Self.helloSHA256)
        #expect(digest.description == "sha256:\(Self.helloSHA256)")
    }

    @Test func parsesSHA384AndSHA512() throws {
        let sha384 = try Digest(parsing: "sha384:\(Self.helloSHA384)")
        #expect(sha384.algorithm == .sha384)
        #expect(sha384.encoded.utf8.count == 96)
        let sha512 = try Digest(parsing: "sha512:\(Self.helloSHA512)")
        #expect(sha512.algorithm == .sha512)
        #expect(sha512.encoded == Self.helloSHA512)
        #expect(sha512.description == "sha512:\(Self.helloSHA512)")
    }

    @Test func algorithmLengths() {
        #expect(DigestAlgorithm.sha256.hexLength == 64)
        #expect(DigestAlgorithm.sha384.hexLength == 96)
        #expect(DigestAlgorithm.sha512.hexLength == 128)
    }

    /// Each defect, and the words its message must carry (go-digest's wording).
    @Test(arguments: [
        ("sha256:\(helloSHA256.uppercased())", "invalid checksum digest format"),
        ("sha256:B94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9", "invalid checksum digest format"),
        ("sha256:g94d27b9934d3e08a52e52d7da7dabfac484efe37a5380ee9088f7ace2efcde9", "invalid checksum digest format"),
        ("sha256:\(helloSHA256.dropLast())", "invalid checksum digest length"),
        ("sha256:\(helloSHA256)0", "invalid checksum digest length"),
        ("sha256:", "invalid checksum digest length"),
        ("sha512:\(helloSHA256)", "invalid checksum digest length"),
        ("sha256:\(helloSHA512)", "invalid checksum digest length"),
        ("md5:5eb63bbbe01eeed093cb22bb8f5acdc3", "unsupported digest algorithm"),
        ("sha1:2aae6c35c94fcfb415dbe95f408b9ce91ee846ed", "unsupported digest algorithm"),
        ("SHA256:\(helloSHA256)", "unsupported digest algorithm"),
        (helloSHA256, "invalid checksum digest format"),
        ("", "invalid checksum digest format"),
        (":\(helloSHA256)", "invalid checksum digest format"),
        ("sha 256:\(helloSHA256)", "invalid checksum digest format"),
        (" sha256:\(helloSHA256)", "invalid checksum digest format"),
    ])
    func rejects(text: String, words: String) {
        let error = #expect(throws: BerthError.self) { try Digest(parsing: text) }
        #expect(error?.code == .invalidArgument)
        #expect(error?.message.hasPrefix("digest ") == true)
        #expect(error?.message.contains(quoted(text)) == true, "message names the input: \(error?.message ?? "")")
        #expect(error?.message.contains(words) == true, "\(error?.message ?? "") should contain \(words)")
    }

    @Test func trailingWhitespaceIsALengthError() {
        let error = #expect(throws: BerthError.self) { try Digest(parsing: "sha256:\(Self.helloSHA256)\n") }
        #expect(error?.code == .invalidArgument)
    }

    @Test func makesDigestFromHasherBytes() {
        let bytes: [UInt8] = [0x00, 0x01, 0x7f, 0x80, 0xab, 0xff]
        let digest = Digest(algorithm: .sha256, bytes: bytes)
        #expect(digest.encoded == "00017f80abff")
        #expect(digest.description == "sha256:00017f80abff")
        let full = Digest(algorithm: .sha256, bytes: [UInt8](repeating: 0xee, count: 32))
        #expect(throws: Never.self) { try Digest(parsing: full.description) }
    }

    @Test func equalityHashingAndOrder() throws {
        let a = try Digest(parsing: "sha256:" + String(repeating: "a", count: 64))
        let b = try Digest(parsing: "sha256:" + String(repeating: "b", count: 64))
        let c = try Digest(parsing: "sha512:" + String(repeating: "0", count: 128))
        #expect(a == (try Digest(parsing: a.description)))
        #expect(a != b)
        #expect(Set([a, b, a]).count == 2)
        #expect(a < b)
        #expect(b < c)  // ordered by text: "sha256:" < "sha512:"
        #expect([c, b, a].sorted() == [a, b, c])
    }

    @Test func codableRoundTripAsAString() throws {
        let digest = try Digest(parsing: "sha256:\(Self.helloSHA256)")
        let data = try JSONEncoder().encode([digest])
        #expect(String(decoding: data, as: UTF8.self) == "[\"sha256:\(Self.helloSHA256)\"]")
        let decoded = try JSONDecoder().decode([Digest].self, from: data)
        #expect(decoded == [digest])
    }

    @Test func decodingAnInvalidDigestIsDataCorrupted() {
        let data = Data("[\"sha256:ABC\"]".utf8)
        let error = #expect(throws: DecodingError.self) { try JSONDecoder().decode([Digest].self, from: data) }
        guard case .dataCorrupted(let context) = error else {
            Issue.record("expected dataCorrupted, got \(String(describing: error))")
            return
        }
        #expect(context.debugDescription.contains("invalid checksum digest"))
    }

    @Test func quotedEscapesQuotesAndBackslashes() {
        #expect(quoted("plain") == "\"plain\"")
        #expect(quoted(#"a"b\c"#) == #""a\"b\\c""#)
        #expect(quoted("") == "\"\"")
    }
}
