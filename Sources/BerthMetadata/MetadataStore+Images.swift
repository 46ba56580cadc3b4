import BerthCore
import GRDB

extension MetadataStore {
    static func validate(_ image: Image) throws(BerthError) {
        guard !image.name.isEmpty else { throw .invalidArgument("image name must not be empty") }
        try Labels.validate(image.labels)
        guard image.target.size > 0 else {
            throw .invalidArgument("image \(quoted(image.name)): Target.Size must be greater than zero")
        }
        guard !image.target.mediaType.isEmpty else {
            throw .invalidArgument("image \(quoted(image.name)): Target.MediaType must be set")
        }
    }

    static func image(from row: Row) throws -> Image {
        Image(
            name: row["name"],
            labels: Codec.labels(row["labels"]),
            target: Descriptor(mediaType: row["media_type"], digest: try Digest(parsing: row["digest"]),
                               size: row["size"], annotations: Codec.labels(row["annotations"])),
            createdAt: Codec.time(row, "created_at"),
            updatedAt: Codec.time(row, "updated_at"))
    }

    /// The image's row; `notFound` if the namespace has no such image.
    static func imageRow(_ db: Database, _ namespace: Namespace, name: String) throws -> Row {
        guard let row = try Row.fetchOne(db.cachedStatement(sql: "SELECT * FROM images WHERE namespace = ? AND name = ?"),
                                         arguments: [namespace.name, name]) else {
            throw BerthError.notFound("image \(quoted(name)): not found")
        }
        return row
    }

    public func image(_ namespace: Namespace, name: String) async throws(BerthError) -> Image {
        try cachedRead(.image(namespace: namespace.name, name: name)) { db in
            try Self.image(from: Self.imageRow(db, namespace, name: name))
        }
    }

    public func images(_ namespace: Namespace, filter: Filter) async throws(BerthError) -> [Image] {
        try await read { db in
            try Row.fetchAll(db.cachedStatement(sql: "SELECT * FROM images WHERE namespace = ? ORDER BY name"), arguments: [namespace.name])
                .map(Self.image(from:)).filter(filter.matches)
        }
    }

    public func createImage(_ namespace: Namespace, _ image: Image) async throws(BerthError) -> Image {
        try Self.validate(image)
        return try await write { db in
            try Self.ensureNamespace(db, namespace)
            if try Bool.fetchOne(db.cachedStatement(sql: "SELECT 1 FROM images WHERE namespace = ? AND name = ?"),
                                 arguments: [namespace.name, image.name]) == true {
                throw BerthError.alreadyExists("image \(quoted(image.name)): already exists")
            }
            var stored = image
            stored.createdAt = .now
            stored.updatedAt = stored.createdAt
            try Self.put(db, namespace, stored)
            return stored
        }
    }

    /// Updates an image; with no paths, labels and target are replaced.
    /// Paths: `labels`, `labels.<key>`, `target`, `annotations`, `annotations.<key>`.
    public func updateImage(_ namespace: Namespace, _ image: Image, paths: [String]) async throws(BerthError) -> Image {
        guard !image.name.isEmpty else { throw .invalidArgument("image name must not be empty") }
        return try await write { db in
            var updated = try Self.image(from: Self.imageRow(db, namespace, name: image.name))
            if paths.isEmpty {
                updated.labels = image.labels
                updated.target = image.target
            } else {
                for path in paths {
                    if applyMapPath(path, prefix: "labels", from: image.labels, to: &updated.labels) { continue }
                    if applyMapPath(path, prefix: "annotations", from: image.target.annotations, to: &updated.target.annotations) { continue }
                    guard path == "target" else {
                        throw BerthError.invalidArgument("image \(quoted(image.name)): cannot update \(quoted(path)) field")
                    }
                    updated.target = image.target
                }
            }
            try Self.validate(updated)
            updated.updatedAt = .now
            try Self.put(db, namespace, updated)
            return updated
        }
    }

    public func deleteImage(_ namespace: Namespace, name: String) async throws(BerthError) {
        try await write { db in
            try db.cachedStatement(sql: "DELETE FROM images WHERE namespace = ? AND name = ?").execute(arguments: [namespace.name, name])
            if db.changesCount == 0 { throw BerthError.notFound("image \(quoted(name)): not found") }
        }
        onDeletion()
    }

    static func put(_ db: Database, _ namespace: Namespace, _ image: Image) throws {
        try db.cachedStatement(sql: """
            INSERT OR REPLACE INTO images (namespace, name, labels, media_type, digest, size, annotations, created_at, updated_at)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
            """).execute(arguments: [namespace.name, image.name, Codec.encode(image.labels), image.target.mediaType,
                             image.target.digest.description, image.target.size, Codec.encode(image.target.annotations),
                             image.createdAt.nanosecondsSinceEpoch, image.updatedAt.nanosecondsSinceEpoch])
    }
}
