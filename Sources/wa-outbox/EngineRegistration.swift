import Coordination
import JobDispatch
import PostgresClient
import Simulator

/// The engines this executable offers: WAHA and wuzapi over HTTP, and the in-process simulator
/// (engine `sim`). Registered here so the worker and the dispatch code know no engine by name.
func engineDirectory(database: PostgresDatabase, simulator: WhatsAppSimulator, requestTimeout: Duration,
                     defaultLimits: SessionLimits = SessionLimits()) -> EngineDirectory {
    var factories = EngineDirectory.httpEngines(requestTimeout: requestTimeout)
    factories["sim"] = { _, _ in SimulatorEngine(simulator: simulator) }
    return EngineDirectory(database: database, engines: factories, defaultLimits: defaultLimits)
}
