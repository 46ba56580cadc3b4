import BerthAPI
import BerthCore
import Foundation
import BerthShim
import SwiftProtobuf
import Testing

/// The hand-written codec against SwiftProtobuf's generated types, in both directions.
@Suite struct CodecTests {
    func mount(_ i: Int) -> Containerd_Types_Mount {
        var m = Containerd_Types_Mount()
        m.type = "overlay"
        m.source = "overlay\(i)"
        m.target = "/t\(i)"
        m.options = ["lowerdir=/a:/b", "upperdir=/u", "workdir=/w\(i)"]
        return m
    }

    @Test func createTaskRequestDecodesGeneratedBytes() throws {
        var g = Containerd_Task_V2_CreateTaskRequest()
        g.id = "c1"
        g.bundle = "/run/b/c1"
        g.rootfs = [mount(1), mount(2)]
        g.terminal = true
        g.stdin = "/f/in"
        g.stdout = "/f/out"
        g.stderr = "/f/err"
        g.checkpoint = "cp"
        g.parentCheckpoint = "pcp"
        var options = Containerd_Runc_V1_Options()
        options.binaryName = "crun"
        options.root = "/run/r"
        options.systemdCgroup = true
        options.noPivotRoot = true
        options.noNewKeyring = true
        options.shimCgroup = "/shim"
        options.ioUid = 7
        options.ioGid = 8
        g.options = Google_Protobuf_Any()
        g.options.typeURL = "containerd.runc.v1.Options"
        g.options.value = try options.serializedBytes()
        let mine = try CreateTaskRequest(decoding: try g.serializedBytes() as [UInt8])
        #expect(mine.id == "c1")
        #expect(mine.bundle == "/run/b/c1")
        #expect(mine.rootfs.count == 2)
        #expect(mine.rootfs[1] == ProtoMount(type: "overlay", source: "overlay2", target: "/t2",
                                             options: ["lowerdir=/a:/b", "upperdir=/u", "workdir=/w2"]))
        #expect(mine.terminal && mine.stdin == "/f/in" && mine.stdout == "/f/out" && mine.stderr == "/f/err")
        #expect(mine.checkpoint == "cp" && mine.parentCheckpoint == "pcp")
        let decoded = try RuncOptions(any: mine.options)
        #expect(decoded.binaryName == "crun" && decoded.root == "/run/r" && decoded.systemdCgroup)
        #expect(decoded.noPivotRoot && decoded.noNewKeyring && decoded.shimCgroup == "/shim")
        #expect(decoded.ioUID == 7 && decoded.ioGID == 8)
        // And back: my encoding parses to the same generated message.
        let again = try Containerd_Task_V2_CreateTaskRequest(serializedBytes: mine.encoded())
        #expect(again == g)
    }

    @Test func runcOptionsRejectsOtherTypes() throws {
        #expect(throws: BerthError.self) { try RuncOptions(any: ProtoAny(typeURL: "containerd.runc.v1.CheckpointOptions", value: [])) }
        let prefixed = ProtoAny(typeURL: "type.googleapis.com/containerd.runc.v1.Options", value: [])
        #expect(try RuncOptions(any: prefixed) == RuncOptions())
    }

    @Test func requestsRoundTrip() throws {
        var exec = Containerd_Task_V2_ExecProcessRequest()
        exec.id = "c"; exec.execID = "e"; exec.terminal = true; exec.stdin = "i"; exec.stdout = "o"; exec.stderr = "e2"
        exec.spec.typeURL = "types.containerd.io/opencontainers/runtime-spec/1/Process"
        exec.spec.value = Data("{\"args\":[\"sh\"]}".utf8)
        let myExec = try ExecProcessRequest(decoding: try exec.serializedBytes() as [UInt8])
        #expect(myExec.execID == "e" && myExec.terminal && myExec.spec?.typeURL == exec.spec.typeURL)
        #expect(try Containerd_Task_V2_ExecProcessRequest(serializedBytes: myExec.encoded()) == exec)

        var kill = Containerd_Task_V2_KillRequest()
        kill.id = "c"; kill.execID = "e"; kill.signal = 9; kill.all = true
        let myKill = try KillRequest(decoding: try kill.serializedBytes() as [UInt8])
        #expect(myKill.signal == 9 && myKill.all && myKill.execID == "e")
        #expect(try Containerd_Task_V2_KillRequest(serializedBytes: myKill.encoded()) == kill)

        var resize = Containerd_Task_V2_ResizePtyRequest()
        resize.id = "c"; resize.execID = "e"; resize.width = 120; resize.height = 40
        let myResize = try ResizePtyRequest(decoding: try resize.serializedBytes() as [UInt8])
        #expect(myResize.width == 120 && myResize.height == 40)
        #expect(try Containerd_Task_V2_ResizePtyRequest(serializedBytes: myResize.encoded()) == resize)

        var close = Containerd_Task_V2_CloseIORequest()
        close.id = "c"; close.execID = "e"; close.stdin = true
        #expect(try CloseIORequest(decoding: try close.serializedBytes() as [UInt8]).stdin)

        var update = Containerd_Task_V2_UpdateTaskRequest()
        update.id = "c"
        update.resources.typeURL = "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources"
        update.resources.value = Data("{}".utf8)
        update.annotations = ["a": "1", "b": "2"]
        let myUpdate = try UpdateTaskRequest(decoding: try update.serializedBytes() as [UInt8])
        #expect(myUpdate.annotations == ["a": "1", "b": "2"] && myUpdate.resources?.value == Array("{}".utf8))
        #expect(try Containerd_Task_V2_UpdateTaskRequest(serializedBytes: myUpdate.encoded()) == update)

        var start = Containerd_Task_V2_StartRequest()
        start.id = "c"; start.execID = "e"
        #expect(try ProcessRequest(decoding: try start.serializedBytes() as [UInt8]) == ProcessRequest(id: "c", execID: "e"))
        var shutdown = Containerd_Task_V2_ShutdownRequest()
        shutdown.id = "c"; shutdown.now = true
        let myShutdown = try ShutdownRequest(decoding: try shutdown.serializedBytes() as [UInt8])
        #expect(myShutdown.now && myShutdown.id == "c")
        var checkpoint = Containerd_Task_V2_CheckpointTaskRequest()
        checkpoint.id = "c"; checkpoint.path = "/p"
        #expect(try CheckpointTaskRequest(decoding: try checkpoint.serializedBytes() as [UInt8]).path == "/p")
    }

    @Test func responsesDecodeAsGenerated() throws {
        var state = StateResponse()
        state.id = "c"; state.bundle = "/b"; state.pid = 42; state.status = .paused
        state.stdin = "i"; state.stdout = "o"; state.stderr = "e"; state.terminal = true
        state.exitStatus = 137; state.exitedAt = ProtoTimestamp(seconds: 1_700_000_000, nanos: 5); state.execID = "x"
        let g = try Containerd_Task_V2_StateResponse(serializedBytes: state.encoded())
        #expect(g.id == "c" && g.bundle == "/b" && g.pid == 42 && g.status == .paused)
        #expect(g.stdin == "i" && g.stdout == "o" && g.stderr == "e" && g.terminal)
        #expect(g.exitStatus == 137 && g.exitedAt.seconds == 1_700_000_000 && g.exitedAt.nanos == 5 && g.execID == "x")
        #expect(try StateResponse(decoding: try g.serializedBytes() as [UInt8]) == state)

        var notExited = StateResponse()
        notExited.exitedAt = .goZero
        #expect(try Containerd_Task_V2_StateResponse(serializedBytes: notExited.encoded()).exitedAt.seconds == -62_135_596_800)

        let delete = DeleteResponse(pid: 9, exitStatus: 137, exitedAt: ProtoTimestamp(seconds: 3, nanos: 4))
        let gd = try Containerd_Task_V2_DeleteResponse(serializedBytes: delete.encoded())
        #expect(gd.pid == 9 && gd.exitStatus == 137 && gd.exitedAt.seconds == 3 && gd.exitedAt.nanos == 4)

        let wait = WaitResponse(exitStatus: 3, exitedAt: ProtoTimestamp(seconds: 10, nanos: 0))
        let gw = try Containerd_Task_V2_WaitResponse(serializedBytes: wait.encoded())
        #expect(gw.exitStatus == 3 && gw.exitedAt.seconds == 10 && gw.hasExitedAt)

        #expect(try Containerd_Task_V2_CreateTaskResponse(serializedBytes: PidResponse(pid: 77).encoded()).pid == 77)
        #expect(try Containerd_Task_V2_StartResponse(serializedBytes: PidResponse(pid: 78).encoded()).pid == 78)

        var pids = PidsResponse()
        pids.processes = [ProcessInfo(pid: 1),
                          ProcessInfo(pid: 2, info: ProtoAny(typeURL: ProcessDetails.typeURL, message: ProcessDetails(execID: "e1")))]
        let gp = try Containerd_Task_V2_PidsResponse(serializedBytes: pids.encoded())
        #expect(gp.processes.map(\.pid) == [1, 2])
        #expect(gp.processes[1].info.typeURL == "containerd.runc.v1.ProcessDetails")
        #expect(try Containerd_Runc_V1_ProcessDetails(serializedBytes: gp.processes[1].info.value).execID == "e1")

        var connect = ConnectResponse()
        connect.shimPID = 100; connect.taskPID = 200; connect.version = "v"
        let gc = try Containerd_Task_V2_ConnectResponse(serializedBytes: connect.encoded())
        #expect(gc.shimPid == 100 && gc.taskPid == 200 && gc.version == "v")

        let stats = StatsResponse(stats: ProtoAny(typeURL: CgroupV1Metrics.typeURL, value: [8, 1]))
        #expect(try Containerd_Task_V2_StatsResponse(serializedBytes: stats.encoded()).stats.typeURL == "io.containerd.cgroups.v1.Metrics")
    }

    @Test func eventsAndEnvelopeDecodeAsGenerated() throws {
        let at = ProtoTimestamp(seconds: 1_700_000_001, nanos: 9)
        let create = TaskEvent.create(containerID: "c", bundle: "/b", rootfs: [ProtoMount(type: "bind", source: "/s", options: ["rbind"])],
                                      io: .init(stdin: "i", stdout: "o", stderr: "e", terminal: true), checkpoint: "", pid: 5)
        let envelope = EventEnvelope(timestamp: at, namespace: "ns", event: create)
        let forward = try Containerd_Services_Events_Ttrpc_V1_ForwardRequest(serializedBytes: ForwardRequest(envelope: envelope).encoded())
        #expect(forward.envelope.namespace == "ns" && forward.envelope.topic == "/tasks/create")
        #expect(forward.envelope.timestamp.seconds == 1_700_000_001 && forward.envelope.event.typeURL == "containerd.events.TaskCreate")
        let gCreate = try Containerd_Events_TaskCreate(serializedBytes: forward.envelope.event.value)
        #expect(gCreate.containerID == "c" && gCreate.bundle == "/b" && gCreate.pid == 5)
        #expect(gCreate.rootfs.first?.options == ["rbind"] && gCreate.io.stdout == "o" && gCreate.io.terminal)

        let exit = try Containerd_Events_TaskExit(serializedBytes: TaskEvent.exit(containerID: "c", id: "e", pid: 6, exitStatus: 3, exitedAt: at).encoded())
        #expect(exit.containerID == "c" && exit.id == "e" && exit.pid == 6 && exit.exitStatus == 3 && exit.exitedAt.nanos == 9)
        let delete = try Containerd_Events_TaskDelete(serializedBytes: TaskEvent.delete(containerID: "c", pid: 6, exitStatus: 137, exitedAt: at, id: "i").encoded())
        #expect(delete.containerID == "c" && delete.pid == 6 && delete.exitStatus == 137 && delete.id == "i" && delete.exitedAt.seconds == at.seconds)
        #expect(try Containerd_Events_TaskStart(serializedBytes: TaskEvent.start(containerID: "c", pid: 7).encoded()).pid == 7)
        let started = try Containerd_Events_TaskExecStarted(serializedBytes: TaskEvent.execStarted(containerID: "c", execID: "x", pid: 8).encoded())
        #expect(started.execID == "x" && started.pid == 8)
        #expect(try Containerd_Events_TaskExecAdded(serializedBytes: TaskEvent.execAdded(containerID: "c", execID: "x").encoded()).execID == "x")
        #expect(try Containerd_Events_TaskPaused(serializedBytes: TaskEvent.paused(containerID: "c").encoded()).containerID == "c")
        #expect(try Containerd_Events_TaskCheckpointed(serializedBytes: TaskEvent.checkpointed(containerID: "c", checkpoint: "k").encoded()).checkpoint == "k")
        #expect(TaskEvent.oom(containerID: "c").typeURL == "containerd.events.TaskOOM")
        #expect(TaskEvent.execAdded(containerID: "c", execID: "x").topic == "/tasks/exec-added")
        // Type URLs equal the generated messages' full names, with no host prefix.
        #expect(TaskEvent.resumed(containerID: "c").typeURL == Containerd_Events_TaskResumed.protoMessageName)
        #expect(TaskEvent.exit(containerID: "", id: "", pid: 0, exitStatus: 0, exitedAt: at).typeURL == Containerd_Events_TaskExit.protoMessageName)
    }

    @Test func cgroupV1MetricsDecodeAsGenerated() throws {
        var metrics = CgroupV1Metrics()
        metrics.pids = (3, 100)
        metrics.cpuUsage = (1000, 300, 700, [400, 600])
        metrics.cpuThrottling = (10, 2, 99)
        var stat: [String: UInt64] = [:]
        for (index, key) in CgroupV1Metrics.memoryStatFields.enumerated() { stat[key] = UInt64(1000 + index) }
        metrics.memoryStat = KeyedCounters(stat)
        metrics.memoryUsage = .init(limit: 1 << 30, usage: 4096, max: 8192, failcnt: 1)
        metrics.memorySwap = .init(limit: 5, usage: 6, max: 7, failcnt: 8)
        metrics.memoryKernel = .init(usage: 11)
        metrics.memoryKernelTCP = .init(usage: 12)
        metrics.oomControl = KeyedCounters(["oom_kill_disable": 1, "under_oom": 0, "oom_kill": 4])
        let g = try Io_Containerd_Cgroups_V1_Metrics(serializedBytes: metrics.encoded())
        #expect(g.pids.current == 3 && g.pids.limit == 100)
        #expect(g.cpu.usage.total == 1000 && g.cpu.usage.kernel == 300 && g.cpu.usage.user == 700 && g.cpu.usage.perCpu == [400, 600])
        #expect(g.cpu.throttling.periods == 10 && g.cpu.throttling.throttledPeriods == 2 && g.cpu.throttling.throttledTime == 99)
        #expect(g.memory.cache == 1000 && g.memory.rss == 1001 && g.memory.pgFault == 1008)
        #expect(g.memory.hierarchicalMemoryLimit == 1015 && g.memory.hierarchicalSwapLimit == 1016)
        #expect(g.memory.totalCache == 1017 && g.memory.totalUnevictable == 1031)
        #expect(g.memory.usage.limit == 1 << 30 && g.memory.usage.usage == 4096 && g.memory.usage.max == 8192 && g.memory.usage.failcnt == 1)
        #expect(g.memory.swap.usage == 6 && g.memory.kernel.usage == 11 && g.memory.kernelTcp.usage == 12)
        #expect(g.memoryOomControl.oomKillDisable == 1 && g.memoryOomControl.oomKill == 4)
    }

    @Test func cgroupV2MetricsDecodeAsGenerated() throws {
        var metrics = CgroupV2Metrics()
        metrics.pids = (2, 0)
        metrics.cpu = KeyedCounters(["usage_usec": 1, "user_usec": 2, "system_usec": 3, "nr_periods": 4, "nr_throttled": 5, "throttled_usec": 6])
        var stat: [String: UInt64] = [:]
        for (index, key) in CgroupV2Metrics.memoryStatFields.enumerated() { stat[key] = UInt64(500 + index) }
        metrics.memory = KeyedCounters(stat)
        metrics.memoryEvents = KeyedCounters(["low": 1, "high": 2, "max": 3, "oom": 4, "oom_kill": 5])
        let g = try Io_Containerd_Cgroups_V2_Metrics(serializedBytes: metrics.encoded())
        #expect(g.pids.current == 2)
        #expect(g.cpu.usageUsec == 1 && g.cpu.userUsec == 2 && g.cpu.systemUsec == 3 && g.cpu.nrPeriods == 4 && g.cpu.nrThrottled == 5 && g.cpu.throttledUsec == 6)
        #expect(g.memory.anon == 500 && g.memory.file == 501 && g.memory.thpCollapseAlloc == 530)
        #expect(g.memory.usage == 531 && g.memory.usageLimit == 532 && g.memory.swapUsage == 533 && g.memory.swapLimit == 534)
        #expect(g.memoryEvents.low == 1 && g.memoryEvents.oomKill == 5)
        #expect(CgroupV2Metrics.typeURL == Io_Containerd_Cgroups_V2_Metrics.protoMessageName)
        #expect(CgroupV1Metrics.typeURL == Io_Containerd_Cgroups_V1_Metrics.protoMessageName)
    }

    @Test func statusEnumMatches() {
        #expect(ProtoTaskStatus.paused.rawValue == UInt64(Containerd_V1_Types_Status.paused.rawValue))
        #expect(ProtoTaskStatus.pausing.rawValue == UInt64(Containerd_V1_Types_Status.pausing.rawValue))
        #expect(ProtoTaskStatus.stopped.rawValue == UInt64(Containerd_V1_Types_Status.stopped.rawValue))
    }
}
