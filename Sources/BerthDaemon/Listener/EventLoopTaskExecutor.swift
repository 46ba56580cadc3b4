import NIOCore

/// Runs Swift tasks on a NIO event loop's thread.
///
/// grpc-swift reads a call's frames on the connection's event loop and runs its handler as a
/// Swift task. With the default executor, every call therefore crosses threads at least twice
/// (event loop to the cooperative pool and back with the response), each crossing a futex wake
/// and a context switch: measured at about 840 futex calls per `ctr run --rm`, with nearly half
/// of the daemon's CPU time spent in the kernel. berthd serves gRPC from a single event loop and
/// prefers this executor for everything the server runs (`withTaskExecutorPreference`), so a
/// call's frames, handler and response stay on one thread. Blocking work still leaves it: file
/// and process work goes to `runBlocking`, database writes to GRDB's writer; only their results
/// come back here.
public final class EventLoopTaskExecutor: TaskExecutor, @unchecked Sendable {
    // @unchecked: `loop` is immutable and event loops are thread-safe.
    public let loop: any EventLoop

    public init(loop: any EventLoop) {
        self.loop = loop
    }

    public func enqueue(_ job: consuming ExecutorJob) {
        let job = UnownedJob(job)
        loop.execute { job.runSynchronously(on: self.asUnownedTaskExecutor()) }
    }
}
