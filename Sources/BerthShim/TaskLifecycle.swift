import BerthCore

/// The lifecycle of one process (a container's init or an exec), as a value.
///
/// Each mutating method either moves to the next state and returns what the caller must do, in
/// order, or throws without changing anything: `failedPrecondition` for a transition the current
/// state does not allow, `notFound` for signalling a process that already finished (containerd's
/// `ErrNotFound "process already finished"`). The shim runs the actions; tests drive the value.
public enum TaskLifecycle: Sendable, Hashable, CustomStringConvertible {
    case created
    case running
    case paused
    case stopped(ExitStatus)
    case deleted

    /// What the caller does after a transition.
    public enum Action: Sendable, Hashable {
        case invokeRuntimeStart
        case invokeRuntimePause
        case invokeRuntimeResume
        case invokeRuntimeDelete
        case publishStart
        case publishPaused
        case publishResumed
        case publishExit(ExitStatus)
        case publishDelete
        case wakeWaiters
    }

    public var description: String {
        switch self {
        case .created: "created"
        case .running: "running"
        case .paused: "paused"
        case .stopped: "stopped"
        case .deleted: "deleted"
        }
    }

    /// The status `State` reports.
    public var status: ProtoTaskStatus {
        switch self {
        case .created: .created
        case .running: .running
        case .paused: .paused
        case .stopped, .deleted: .stopped
        }
    }

    /// The exit status once stopped.
    public var exit: ExitStatus? {
        if case .stopped(let exit) = self { return exit }
        return nil
    }

    public var hasExited: Bool {
        switch self {
        case .stopped, .deleted: true
        default: false
        }
    }

    /// created → running.
    public mutating func start() throws(BerthError) -> [Action] {
        guard case .created = self else { throw wrongState("start") }
        self = .running
        return [.invokeRuntimeStart, .publishStart]
    }

    /// running → paused.
    public mutating func pause() throws(BerthError) -> [Action] {
        guard case .running = self else { throw wrongState("pause") }
        self = .paused
        return [.invokeRuntimePause, .publishPaused]
    }

    /// paused → running.
    public mutating func resume() throws(BerthError) -> [Action] {
        guard case .paused = self else { throw wrongState("resume") }
        self = .running
        return [.invokeRuntimeResume, .publishResumed]
    }

    /// The process ended: created, running or paused → stopped. A second exit changes nothing.
    public mutating func exited(_ status: ExitStatus) -> [Action] {
        switch self {
        case .created, .running, .paused:
            self = .stopped(status)
            return [.publishExit(status), .wakeWaiters]
        case .stopped, .deleted:
            return []
        }
    }

    /// created or stopped → deleted. A running or paused process must be stopped first.
    public mutating func delete() throws(BerthError) -> [Action] {
        switch self {
        case .created, .stopped:
            self = .deleted
            return [.invokeRuntimeDelete, .publishDelete]
        case .running, .paused:
            throw BerthError.failedPrecondition("cannot delete a \(self) process: it must be stopped first")
        case .deleted:
            throw BerthError.notFound("process already deleted: not found")
        }
    }

    /// Checks that a signal can still be delivered.
    public func kill() throws(BerthError) {
        if hasExited { throw BerthError.notFound("process already finished: not found") }
    }

    private func wrongState(_ verb: String) -> BerthError {
        .failedPrecondition("cannot \(verb) a \(self) process")
    }
}
