import BerthCore
import Testing

/// A record with optional fields, so presence can be tested apart from the empty string.
private struct Record: Filterable, CustomStringConvertible {
    var id: String
    var name: String?
    var other: String?
    var labels: [String: String] = [:]

    func field(_ path: [String]) -> String? {
        switch path.first {
        case "id": id
        case "name": name
        case "other": other
        case "labels": Self.label(path.dropFirst(), in: labels)
        default: nil
        }
    }

    var description: String { id }
}

/// Seven records covering plain and punctuated labels, labels with quotes and dots in their
/// keys, and a value with a comma and spaces.
private let corpus: [Record] = [
    Record(id: "r0", name: "alpine", labels: ["tier": "base"]),
    Record(id: "r1", name: "busybox"),
    Record(id: "r2", name: "alpine", labels: ["tier": "extra", "needs quoting": "yes"]),
    Record(id: "r3", name: "busybox", labels: ["build": "ci"]),
    Record(id: "r4", name: "alpine-edge", labels: [#"odd \ and ""#: "yes", "io.example/owner": "team-a"]),
    Record(id: "r5", name: "nginx", other: "with, comma and spaces"),
    Record(id: "r6", name: "redis", other: "xyz", labels: ["tier": "v1.2_rc-3", "a.b": "dotted"]),
]

private func matching(_ filters: [String]) throws -> [String] {
    let filter = try Filter(parsing: filters)
    return corpus.filter { filter.matches($0) }.map(\.id)
}

private func matching(_ filter: String) throws -> [String] { try matching([filter]) }

private let everything = corpus.map(\.id)

@Suite("Filter: matching")
struct FilterMatchingTests {
    @Test func noFiltersMatchEverything() throws {
        #expect(try matching([]) == everything)
        #expect(Filter.all.matchesEverything)
        #expect(try Filter(parsing: []).matchesEverything)
        #expect(corpus.allSatisfy { Filter.all.matches($0) })
    }

    @Test func anEmptyFilterStringMatchesEverything() throws {
        #expect(try matching("") == everything)
        #expect(try Filter(parsing: [""]).matchesEverything)
        // Disjunction with "always": still everything.
        #expect(try matching(["", "name==nobody"]) == everything)
        #expect(try Filter(parsing: ["name==x"]).matchesEverything == false)
    }

    @Test func presence() throws {
        #expect(try matching("name") == everything)
        #expect(try matching("labels.tier") == ["r0", "r2", "r6"])
        #expect(try matching("other") == ["r5", "r6"])
        #expect(try matching("nosuchfield") == [])
        #expect(try matching("labels") == [], "a bare `labels` path names no single label")
    }

    @Test func equality() throws {
        #expect(try matching("name==busybox") == ["r1", "r3"])
        #expect(try matching("labels.tier==base") == ["r0"])
        #expect(try matching("name==busy") == [], "== is exact, not a prefix match")
        #expect(try matching("labels.tier==Base") == [], "== is case sensitive")
    }

    @Test func punctuatedBareValue() throws {
        #expect(try matching("labels.tier==v1.2_rc-3") == ["r6"])
    }

    @Test func inequalityOnPresentFields() throws {
        #expect(try matching("name!=busybox") == ["r0", "r2", "r4", "r5", "r6"])
    }

    /// containerd's `!=` is `value != want` where a missing field reads as "": an object without
    /// the field matches. (`labels.tier!=base` lists images with no `tier` label in containerd.)
    @Test func inequalityOnAbsentFieldsMatchesLikeContainerd() throws {
        #expect(try matching("labels.tier!=base") == ["r1", "r2", "r3", "r4", "r5", "r6"])
    }

    @Test func conjunction() throws {
        #expect(try matching("name==busybox,labels.build") == ["r3"])
        #expect(try matching("labels.tier,name==alpine") == ["r0", "r2"])
        #expect(try matching("name==busybox,labels.build==ci") == ["r3"])
        #expect(try matching("name==busybox,labels.build==cd") == [])
        #expect(try matching("name==alpine,name==busybox") == [])
    }

    @Test func severalFilterStringsAreADisjunction() throws {
        #expect(try matching(["name==busybox", "labels.tier==base"]) == ["r0", "r1", "r3"])
        #expect(try matching(["name==nginx", "name==redis,labels.a.b==dotted"]) == ["r5", "r6"])
        #expect(try matching(["name==nobody", "name==none"]) == [])
    }

    @Test func regexIsUnanchored() throws {
        #expect(try matching("name~=pin") == ["r0", "r2", "r4"])
        #expect(try matching("name~=^alpine$") == ["r0", "r2"])
        #expect(try matching("name~=box$") == ["r1", "r3"])
        #expect(try matching("name~=[xz]") == ["r1", "r3", "r5"])
    }

    @Test func regexCombinedWithOtherSelectors() throws {
        #expect(try matching("other~=[xyz]+,name!=nginx") == ["r6"])
        #expect(try matching("other~=[a-z]+,name!=redis") == ["r5"])
    }

    @Test func regexWithAlternativeQuotes() throws {
        #expect(try matching("name~=/^(nginx|redis)$/") == ["r5", "r6"])
        #expect(try matching(#"name~=|^(nginx\|redis)$|"#) == ["r5", "r6"])
        #expect(try matching("other~=/[xyz]{1,2}/,name!=nginx") == ["r6"], "the comma inside /…/ is not a separator")
        #expect(try matching("labels.\"io.example/owner\"~=|^team-|") == ["r4"])
    }

    @Test func regexQuotedValueWithEscapedDelimiter() throws {
        // `\/` inside /…/ is a literal slash; the resulting pattern `a"/` matches nothing here.
        #expect(try matching(#"other~=/a"\//,name!=nginx"#) == [])
        let filter = try Filter(parsing: [#"id~=/^r\/x$/"#])
        #expect(filter.matches(Record(id: "r/x")))
        #expect(!filter.matches(Record(id: "r\\/x")))
    }

    @Test func bareRegexValueKeepsBackslashes() throws {
        let filter = try Filter(parsing: [#"other~=^\d+\.\d+$"#])
        #expect(filter.matches(Record(id: "x", other: "1.25")))
        #expect(!filter.matches(Record(id: "x", other: "1x25")))
    }

    @Test func quotedValue() throws {
        #expect(try matching(#"other=="with, comma and spaces""#) == ["r5"])
        #expect(try matching(#"name=="alpine""#) == ["r0", "r2"])
    }

    @Test func quotedFieldWithSpaces() throws {
        #expect(try matching(#"name==alpine,labels."needs quoting""#) == ["r2"])
        #expect(try matching(#"labels."needs quoting"==yes"#) == ["r2"])
    }

    @Test func quotedFieldWithEscapedQuoteAndBackslash() throws {
        #expect(try matching(#"labels."odd \\ and \""==yes"#) == ["r4"])
    }

    @Test func quotedFieldIsOneSegment() throws {
        // A label whose key has a dot and a slash: quoted, or (dots only) as a dotted path.
        #expect(try matching(#"labels."io.example/owner"==team-a"#) == ["r4"])
        #expect(try matching(#"labels."a.b"==dotted"#) == ["r6"])
        #expect(try matching("labels.a.b==dotted") == ["r6"], "the rest of a labels path is joined with dots")
        #expect(try matching(#"labels.a."b"==dotted"#) == ["r6"])
    }

    @Test func quotedFieldCanBeFollowedByMoreSegments() throws {
        let record = Record(id: "x", labels: [#"k "q".post"#: "v"])
        let filter = try Filter(parsing: [#"labels."k \"q\"".post==v"#])
        #expect(filter.matches(record))
    }

    @Test func whitespaceAroundTokensIsIgnored() throws {
        #expect(try matching("name == busybox , labels.build") == ["r3"])
        #expect(try matching("  name==busybox  ") == ["r1", "r3"])
        #expect(try matching("labels . tier == base") == ["r0"])
    }

    @Test func fieldsMayStartWithDigitsAndHoldUnderscores() throws {
        let record = Record(id: "x", labels: ["9_lives": "cat"])
        #expect(try Filter(parsing: ["labels.9_lives==cat"]).matches(record))
    }

    @Test func unicodeValues() throws {
        let record = Record(id: "x", name: "牛", labels: ["moo": "true"])
        #expect(try Filter(parsing: ["name~=牛,labels.moo==true"]).matches(record))
        #expect(try Filter(parsing: ["name~=|牛|"]).matches(record))
        #expect(try Filter(parsing: ["name==牛"]).matches(record))
    }
}

@Suite("Filter: escapes")
struct FilterEscapeTests {
    @Test(arguments: [
        (#""a\tb""#, "a\tb"),
        (#""a\nb""#, "a\nb"),
        (#""\a\b\f\r\v""#, "\u{07}\u{08}\u{0C}\r\u{0B}"),
        (#""back\\slash""#, "back\\slash"),
        (#""say \"hi\"""#, "say \"hi\""),
        (#""\x41\x62""#, "Ab"),
        (#""\u00e9t\u00E9""#, "été"),
        (#""\U0001F600""#, "😀"),
        (#""a,b c""#, "a,b c"),
        (#""""#, ""),
    ])
    func decodesGoEscapes(literal: String, decoded: String) throws {
        let filter = try Filter(parsing: ["other==\(literal)"])
        #expect(filter.matches(Record(id: "x", other: decoded)))
        #expect(!filter.matches(Record(id: "x", other: decoded + "!")))
    }

    /// Go's string syntax, which containerd's scanner and unquote follow, has three-digit octal
    /// escapes (`\101` is "A").
    @Test func octalEscapes() throws {
        let filter = try Filter(parsing: [#"other=="\101\142""#])
        #expect(filter.matches(Record(id: "x", other: "Ab")))
    }

    /// Go takes exactly n hex digits after `\x`, `\u`, `\U`; a sign is not a digit.
    @Test func signedNumericEscapesAreIllegal() {
        let error = #expect(throws: BerthError.self) { try Filter(parsing: [#"other=="\x+1""#]) }
        #expect(error?.message.contains("illegal numeric escape sequence") == true)
    }

    @Test(arguments: [
        (#"other=="\g""#, "illegal escape sequence"),
        (#"other=="\'""#, "illegal escape sequence"),
        (#"other=="\/""#, "illegal escape sequence"),
        (#"other~=/\d/"#, "illegal escape sequence"),
        (#"other=="\xZZ""#, "illegal numeric escape sequence"),
        (#"other=="\x4""#, "illegal numeric escape sequence"),
        (#"other=="\u12""#, "illegal numeric escape sequence"),
        (#"other=="\U0011FFFF""#, "illegal numeric escape sequence"),
        (#"labels."\g""#, "illegal escape sequence"),
    ])
    func rejectsBadEscapes(input: String, words: String) {
        let error = #expect(throws: BerthError.self) { try Filter(parsing: [input]) }
        #expect(error?.code == .invalidArgument)
        #expect(error?.message.contains(words) == true, "\(error?.message ?? "")")
    }
}

@Suite("Filter: parse errors")
struct FilterParseErrorTests {
    @Test(arguments: [
        ("name==foo,", "expected field or quoted"),
        ("labels.", "expected field or quoted"),
        (",name", "expected field or quoted"),
        ("==foo", "expected field or quoted"),
        (#"labels.?"k"==v"#, "expected field or quoted"),
        ("labels.|foo|==bar", "expected field or quoted"),
        ("name~=", "expected value or quoted"),
        ("name~=,id!=ff", "expected value or quoted"),
        ("name==", "expected value or quoted"),
        ("name==  ", "expected value or quoted"),
        ("name=foo", #"unsupported operator "=""#),
        ("name===foo", #"unsupported operator "===""#),
        ("name!~foo", #"unsupported operator "!~""#),
        ("labels.ns/key==value", #"expected an operator ("=="|"!="|"~=")"#),
        ("name foo", #"expected an operator"#),
        ("name==foo bar", "unexpected input: b"),
        ("name==/value/", "invalid quote encountered"),
        ("name!=|value|", "invalid quote encountered"),
        (#"name=="unterminated"#, "quoted literal not terminated"),
        ("name~=/unterminated", "quoted literal not terminated"),
        ("name==\"line\nbreak\"", "quoted literal not terminated"),
        (#"labels."unterminated"#, "quoted literal not terminated"),
        ("name\u{0}==x", "expected an operator"),
    ])
    func parseErrorsAreInvalidArgument(input: String, words: String) {
        let error = #expect(throws: BerthError.self) { try Filter(parsing: [input]) }
        #expect(error?.code == .invalidArgument)
        let message = error?.message ?? ""
        #expect(message.hasPrefix("filter "), "\(message)")
        #expect(message.contains(quoted(input)), "names the filter: \(message)")
        #expect(message.contains("parse error at position"), "\(message)")
        #expect(message.contains(words), "\(message) should contain \(words)")
    }

    @Test func errorPositionPointsAtTheDefect() {
        let error = #expect(throws: BerthError.self) { try Filter(parsing: ["name==foo,"]) }
        #expect(error?.message.contains("position 10") == true, "\(error?.message ?? "")")
        let operatorError = #expect(throws: BerthError.self) { try Filter(parsing: ["abc=x"]) }
        #expect(operatorError?.message.contains("position 3") == true, "\(operatorError?.message ?? "")")
    }

    @Test func oneBadFilterAmongSeveralFailsTheWhole() {
        let error = #expect(throws: BerthError.self) { try Filter(parsing: ["name==ok", "name==", "id"]) }
        #expect(error?.code == .invalidArgument)
        #expect(error?.message.contains(quoted("name==")) == true)
    }

    @Test(arguments: ["name~=[", "name~=(unclosed", "name~=/a{2,1}/", "name~=*"])
    func invalidRegexIsInvalidArgument(input: String) {
        let error = #expect(throws: BerthError.self) { try Filter(parsing: [input]) }
        #expect(error?.code == .invalidArgument)
        let message = error?.message ?? ""
        #expect(message.hasPrefix("filter "), "\(message)")
        #expect(message.contains("regular expression"), "\(message)")
    }
}

@Suite("Filter: models")
struct FilterModelTests {
    static let manifestDigest = try! Digest(parsing: "sha256:" + String(repeating: "1", count: 64))

    @Test func imageFields() throws {
        let image = Image(name: "docker.io/library/busybox:latest", labels: ["k": "v"],
                          target: Descriptor(mediaType: MediaType.ociIndex, digest: Self.manifestDigest, size: 10))
        #expect(try Filter(parsing: ["name==docker.io/library/busybox:latest"]).matches(image))
        #expect(try Filter(parsing: ["name~=busybox"]).matches(image))
        #expect(try Filter(parsing: ["target.mediatype==\(MediaType.ociIndex)"]).matches(image))
        #expect(try Filter(parsing: ["target.digest==\(Self.manifestDigest)"]).matches(image))
        #expect(try Filter(parsing: ["labels.k==v"]).matches(image))
        #expect(try !Filter(parsing: ["target"]).matches(image), "target alone is not a field")
        #expect(try !Filter(parsing: ["target.size"]).matches(image))
    }

    @Test func containerFields() throws {
        let container = Container(id: "c1", labels: ["app": "web"], image: "busybox", runtimeName: "io.containerd.runc.v2",
                                  spec: TypedValue(typeURL: "types.containerd.io/opencontainers/runtime-spec/1/Spec", value: []),
                                  snapshotter: "overlayfs", snapshotKey: "c1-snap", sandbox: "sb")
        for text in ["id==c1", "image==busybox", "runtime.name==io.containerd.runc.v2", "snapshotter==overlayfs",
                     "snapshotkey==c1-snap", "sandbox==sb", "labels.app==web"] {
            #expect(try Filter(parsing: [text]).matches(container), "\(text)")
        }
        #expect(try !Filter(parsing: ["runtime"]).matches(container))
        #expect(try !Filter(parsing: ["runtime.options"]).matches(container))
    }

    @Test func contentAndLeaseFields() throws {
        let info = ContentInfo(digest: Self.manifestDigest, size: 42, createdAt: .now, updatedAt: .now,
                               labels: ["containerd.io/gc.root": "x"])
        #expect(try Filter(parsing: ["digest==\(Self.manifestDigest)"]).matches(info))
        #expect(try Filter(parsing: ["size==42"]).matches(info))
        #expect(try Filter(parsing: [#"labels."containerd.io/gc.root""#]).matches(info))
        let lease = Lease(id: "lease-1", labels: ["containerd.io/gc.expire": "2030-01-01T00:00:00Z"])
        #expect(try Filter(parsing: ["id==lease-1"]).matches(lease))
        #expect(try Filter(parsing: [#"labels."containerd.io/gc.expire"~=^2030"#]).matches(lease))
        #expect(try !Filter(parsing: ["id==lease-2"]).matches(lease))
    }
}
