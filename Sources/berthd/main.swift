import ArgumentParser
import BerthCore
import BerthDaemon
import Logging

@main
struct Berthd: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "berthd",
        abstract: "Berth: a containerd-compatible container runtime daemon.",
        subcommands: [ConfigCommand.self])

    @Option(name: [.customShort("c"), .long], help: "Path to the configuration file (default \(Config.defaultPath)).")
    var config: String?

    @Option(help: "Persistent data directory.")
    var root: String?

    @Option(help: "Runtime state directory.")
    var state: String?

    @Option(name: [.customShort("a"), .long], help: "Unix socket to serve containerd's API on.")
    var address: String?

    @Option(name: [.customShort("l"), .long], help: "trace, debug, info, warn, error.")
    var logLevel: String?

    func run() async throws {
        var config = try Config.load(path: config)
        if let root { config.root = root }
        if let state { config.state = state }
        if let address { config.grpc.address = address }
        if let logLevel { config.debug.level = logLevel }
        guard let level = Logger.Level(configName: config.debug.level) else {
            throw ValidationError("unknown log level \(quoted(config.debug.level))")
        }
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "berthd")
        let daemon: Daemon
        do {
            daemon = try Daemon(config: config, logger: logger)
        } catch {
            logger.critical("cannot start: \(error)")
            throw ExitCode(1)
        }
        do {
            try await daemon.run()
        } catch {
            logger.critical("berthd failed: \(error)")
            throw ExitCode(1)
        }
    }
}

struct ConfigCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "config", abstract: "Show configuration.", subcommands: [DefaultConfig.self])

    struct DefaultConfig: ParsableCommand {
        static let configuration = CommandConfiguration(commandName: "default", abstract: "Print the default configuration.")
        func run() { print(Config.defaultText, terminator: "") }
    }
}

extension Logger.Level {
    init?(configName: String) {
        switch configName.lowercased() {
        case "trace": self = .trace
        case "debug": self = .debug
        case "info": self = .info
        case "warn", "warning": self = .warning
        case "error": self = .error
        case "fatal", "panic", "critical": self = .critical
        default: return nil
        }
    }
}
