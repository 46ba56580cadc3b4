import BerthCore
import GRDB

/// Leases are changed in commits that are not fsynced on their own (`write(synced: false)`): a
/// lease only guards a client's work in progress, and every later synced commit (the content,
/// snapshot or container that work produces) makes the lease change durable with it. A power
/// loss can take only lease changes made since the last synced commit, which is what the
/// clients that made them, gone with the power too, would have left anyway: a missing lease or
/// resource is one their work had not yet relied on, and a lease that comes back keeps its
/// resources until it expires. Nothing is removed from disk before a synced commit, so no file
/// goes while a row that names it could still come back.
extension MetadataStore {
    /// Creates a lease; an empty `id` gets a generated one, as containerd's service does.
    public func createLease(_ namespace: Namespace, id requested: String, labels: [String: String]) async throws(BerthError) -> Lease {
        let id = requested.isEmpty ? Self.randomLeaseID() : requested
        try Self.validateLeaseID(id)
        try Labels.validate(labels)
        return try await write(synced: false) { db in
            try Self.ensureNamespace(db, namespace)
            if try Bool.fetchOne(db.cachedStatement(sql: "SELECT 1 FROM leases WHERE namespace = ? AND id = ?"), arguments: [namespace.name, id]) == true {
                throw BerthError.alreadyExists("lease \(quoted(id)): already exists")
            }
            let lease = Lease(id: id, labels: labels, createdAt: .now)
            try db.cachedStatement(sql: "INSERT INTO leases (namespace, id, labels, created_at) VALUES (?, ?, ?, ?)").execute(
                           arguments: [namespace.name, id, Codec.encode(labels), lease.createdAt.nanosecondsSinceEpoch])
            return lease
        }
    }

    /// Lease ids are not identifiers: clients make them from random base64 (`123-a_-b`) and
    /// `ctr images mount` uses the mount target's path, so only emptiness, length and control
    /// characters are refused, as containerd refuses nothing but an empty id.
    static func validateLeaseID(_ id: String) throws(BerthError) {
        guard !id.isEmpty else { throw .invalidArgument("lease id must not be empty") }
        guard id.utf8.count <= 256 else { throw .invalidArgument("lease id \(quoted(String(id.prefix(40))))...: longer than 256 bytes") }
        guard !id.unicodeScalars.contains(where: { $0.value < 0x20 }) else {
            throw .invalidArgument("lease id \(quoted(id)): must not contain control characters")
        }
    }

    static func randomLeaseID() -> String {
        let now = Timestamp.now
        return "\(now.nanos)-" + String(UInt32.random(in: 0..<(1 << 24)), radix: 16)
    }

    public func leases(_ namespace: Namespace, filter: Filter) async throws(BerthError) -> [Lease] {
        try await read { db in
            try Row.fetchAll(db.cachedStatement(sql: "SELECT * FROM leases WHERE namespace = ? ORDER BY created_at, id"), arguments: [namespace.name])
                .map { Lease(id: $0["id"], labels: Codec.labels($0["labels"]), createdAt: Codec.time($0, "created_at")) }
                .filter(filter.matches)
        }
    }

    public func deleteLease(_ namespace: Namespace, id: String) async throws(BerthError) {
        try await write(synced: false) { db in
            try db.cachedStatement(sql: "DELETE FROM leases WHERE namespace = ? AND id = ?").execute(arguments: [namespace.name, id])
            if db.changesCount == 0 { throw BerthError.notFound("lease \(quoted(id)): not found") }
        }
        onDeletion()
    }

    /// containerd's resource types: `content` (id a digest), `ingests`, `snapshots/<snapshotter>`;
    /// others are `unimplemented`, malformed ones `invalidArgument`.
    static func validate(_ resource: LeaseResource) throws(BerthError) {
        let parts = resource.type.split(separator: "/", omittingEmptySubsequences: false)
        switch parts.first {
        case "content", "ingests":
            guard parts.count == 1 else { throw .invalidArgument("lease resource: invalid resource type \(resource.type)") }
            if parts.first == "content" {
                do { _ = try Digest(parsing: resource.id) } catch {
                    throw .invalidArgument("lease resource: invalid content resource id \(resource.id): \(error.message)")
                }
            } else if resource.id.isEmpty {
                throw .invalidArgument("lease resource: ingest ref must not be empty")
            }
        case "snapshots":
            guard parts.count == 2, !parts[1].isEmpty else {
                throw .invalidArgument("lease resource: invalid snapshot resource type \(resource.type)")
            }
            guard !resource.id.isEmpty else { throw .invalidArgument("lease resource: snapshot key must not be empty") }
        default:
            throw .unimplemented("lease resource: resource type \(resource.type) not supported yet")
        }
    }

    public func addLeaseResource(_ namespace: Namespace, lease: String, _ resource: LeaseResource) async throws(BerthError) {
        try Self.validate(resource)
        try await write(synced: false) { db in try Self.addLeaseResource(db, namespace, lease: lease, resource) }
    }

    /// Throws `notFound` unless the namespace has the lease.
    static func requireLease(_ db: Database, _ namespace: Namespace, _ lease: String) throws {
        guard try Bool.fetchOne(db.cachedStatement(sql: "SELECT 1 FROM leases WHERE namespace = ? AND id = ?"), arguments: [namespace.name, lease]) == true else {
            throw BerthError.notFound("lease \(quoted(lease)): not found")
        }
    }

    static func addLeaseResource(_ db: Database, _ namespace: Namespace, lease: String, _ resource: LeaseResource) throws {
        try Self.requireLease(db, namespace, lease)
        try db.cachedStatement(sql: "INSERT OR IGNORE INTO lease_resources (namespace, lease, type, id) VALUES (?, ?, ?, ?)").execute(
                       arguments: [namespace.name, lease, resource.type, resource.id])
    }

    public func deleteLeaseResource(_ namespace: Namespace, lease: String, _ resource: LeaseResource) async throws(BerthError) {
        try Self.validate(resource)
        try await write(synced: false) { db in
            try Self.requireLease(db, namespace, lease)
            try db.cachedStatement(sql: "DELETE FROM lease_resources WHERE namespace = ? AND lease = ? AND type = ? AND id = ?").execute(
                           arguments: [namespace.name, lease, resource.type, resource.id])
        }
        onDeletion()
    }

    public func leaseResources(_ namespace: Namespace, lease: String) async throws(BerthError) -> [LeaseResource] {
        try await read { db in
            try Self.requireLease(db, namespace, lease)
            return try Row.fetchAll(db.cachedStatement(sql: "SELECT type, id FROM lease_resources WHERE namespace = ? AND lease = ? ORDER BY type, id"),
                                    arguments: [namespace.name, lease])
                .map { LeaseResource(id: $0["id"], type: $0["type"]) }
        }
    }
}
