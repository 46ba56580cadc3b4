@testable import BerthMetadata
import Testing

@Suite struct ReadCacheTests {
    @Test func keepsAnAnswerUntilAWriteFinishes() {
        let cache = ReadCache()
        var reads = 0
        let key = ReadCache.Key.container(namespace: "default", id: "c1")
        #expect(cache.value(key) { reads += 1; return "first" } == "first")
        #expect(cache.value(key) { reads += 1; return "second" } == "first")
        #expect(reads == 1)
        cache.invalidate()
        #expect(cache.value(key) { reads += 1; return "third" } == "third")
        #expect(reads == 2)
        // Another key, and another type under a key, are read.
        #expect(cache.value(.namespace("default")) { 7 } == 7)
    }

    @Test func anAnswerReadWhileAWriteFinishedIsNotKept() {
        let cache = ReadCache()
        let key = ReadCache.Key.content(namespace: "default", digest: "sha256:00")
        #expect(cache.value(key) { () -> String in
            cache.invalidate()  // a write commits while this read looks at the old state
            return "stale"
        } == "stale")
        #expect(cache.value(key) { "fresh" } == "fresh")
    }

    @Test func errorsAreNotKept() {
        struct Missing: Error {}
        let cache = ReadCache()
        let key = ReadCache.Key.image(namespace: "default", name: "x")
        #expect(throws: Missing.self) { try cache.value(key) { () throws(Missing) -> Int in throw Missing() } }
        #expect(cache.value(key) { 1 } == 1)
    }
}
