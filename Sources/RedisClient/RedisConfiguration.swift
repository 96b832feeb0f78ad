/// Where and how to connect to Redis.
///
/// Accepts `redis://[[user]:password@]host[:port][/db]`, `unix:///path/to.sock[?db=N]`, or a
/// bare socket path starting with `/`.
public struct RedisConfiguration: Sendable, CustomStringConvertible {
    public enum Endpoint: Sendable, Equatable {
        case tcp(host: String, port: Int)
        case unix(path: String)
    }

    public var endpoint: Endpoint
    public var password: String?
    public var username: String?
    public var database: Int
    public var connectTimeoutMilliseconds: Int
    /// A command that gets no answer within this time fails and breaks the connection.
    public var commandTimeoutMilliseconds: Int

    public init(
        endpoint: Endpoint, password: String? = nil, username: String? = nil, database: Int = 0,
        connectTimeoutMilliseconds: Int = 2_000, commandTimeoutMilliseconds: Int = 2_000
    ) {
        self.endpoint = endpoint
        self.password = password
        self.username = username
        self.database = database
        self.connectTimeoutMilliseconds = connectTimeoutMilliseconds
        self.commandTimeoutMilliseconds = commandTimeoutMilliseconds
    }

    public init(url: String) throws {
        if url.hasPrefix("/") {
            self.init(endpoint: .unix(path: url))
            return
        }
        if url.hasPrefix("unix://") {
            var path = String(url.dropFirst("unix://".count))
            var database = 0
            if let query = path.firstIndex(of: "?") {
                let parameters = path[path.index(after: query)...]
                path = String(path[..<query])
                for pair in parameters.split(separator: "&") where pair.hasPrefix("db=") {
                    database = Int(pair.dropFirst(3)) ?? 0
                }
            }
            self.init(endpoint: .unix(path: path), database: database)
            return
        }
        guard url.hasPrefix("redis://") else {
            throw RedisError(kind: .configuration, message: "REDIS_URL must start with redis:// or unix://, or be a socket path")
        }
        var rest = Substring(url.dropFirst("redis://".count))
        var password: String?
        var username: String?
        if let at = rest.lastIndex(of: "@") {
            let userInfo = rest[..<at]
            rest = rest[rest.index(after: at)...]
            if let colon = userInfo.firstIndex(of: ":") {
                let user = userInfo[..<colon]
                username = user.isEmpty ? nil : String(user)
                password = String(userInfo[userInfo.index(after: colon)...]).removingPercentEncodingIfPossible
            } else if !userInfo.isEmpty {
                password = String(userInfo)
            }
        }
        var database = 0
        if let slash = rest.firstIndex(of: "/") {
            let db = rest[rest.index(after: slash)...]
            if !db.isEmpty {
                guard let number = Int(db) else {
                    throw RedisError(kind: .configuration, message: "database in REDIS_URL must be a number, got \(db)")
                }
                database = number
            }
            rest = rest[..<slash]
        }
        var host = String(rest)
        var port = 6379
        if let colon = rest.lastIndex(of: ":"), !rest.hasSuffix("]") {
            guard let number = Int(rest[rest.index(after: colon)...]) else {
                throw RedisError(kind: .configuration, message: "port in REDIS_URL must be a number")
            }
            port = number
            host = String(rest[..<colon])
        }
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        if host.isEmpty { host = "127.0.0.1" }
        self.init(endpoint: .tcp(host: host, port: port), password: password, username: username, database: database)
    }

    /// The endpoint without credentials, safe for logs.
    public var description: String {
        switch endpoint {
        case .tcp(let host, let port): "redis://\(password == nil ? "" : "***@")\(host):\(port)/\(database)"
        case .unix(let path): "unix://\(path)?db=\(database)"
        }
    }
}

extension String {
    fileprivate var removingPercentEncodingIfPossible: String {
        guard contains("%") else { return self }
        var bytes: [UInt8] = []
        var index = utf8.startIndex
        while index < utf8.endIndex {
            let byte = utf8[index]
            if byte == UInt8(ascii: "%"), let end = utf8.index(index, offsetBy: 3, limitedBy: utf8.endIndex),
               let value = UInt8(String(decoding: utf8[utf8.index(after: index)..<end], as: UTF8.self), radix: 16) {
                bytes.append(value)
                index = end
            } else {
                bytes.append(byte)
                index = utf8.index(after: index)
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }
}
