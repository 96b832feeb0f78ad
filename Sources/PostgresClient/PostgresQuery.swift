/// A SQL statement with its parameters.
///
/// Written as a string literal with interpolations, every interpolated value becomes a `$n`
/// parameter: `"SELECT * FROM jobs WHERE org = \(org)"` sends `org` separately from the text, so
/// a query built this way cannot be injected into. There is deliberately no way to splice raw
/// text through interpolation.
public struct PostgresQuery: Sendable, ExpressibleByStringInterpolation {
    public var sql: String
    public var binds: [PostgresBind]

    public init(_ sql: String, binds: [PostgresBind] = []) {
        self.sql = sql
        self.binds = binds
    }

    /// Appends `sql` followed by one more parameter, for queries assembled piece by piece
    /// (optional filters). The value is bound, never spliced into the text.
    public mutating func append(_ sql: String, _ value: some PostgresEncodable) {
        binds.append(value.postgresBind)
        self.sql += sql + "$\(binds.count)"
    }

    /// Appends text with no parameter.
    public mutating func append(_ sql: String) {
        self.sql += sql
    }

    public init(stringLiteral value: String) {
        self.init(value)
    }

    public init(stringInterpolation: StringInterpolation) {
        self.init(stringInterpolation.sql, binds: stringInterpolation.binds)
    }

    public struct StringInterpolation: StringInterpolationProtocol {
        var sql = ""
        var binds: [PostgresBind] = []

        public init(literalCapacity: Int, interpolationCount: Int) {
            sql.reserveCapacity(literalCapacity + 4 * interpolationCount)
            binds.reserveCapacity(interpolationCount)
        }

        public mutating func appendLiteral(_ literal: String) {
            sql += literal
        }

        public mutating func appendInterpolation(_ value: some PostgresEncodable) {
            binds.append(value.postgresBind)
            sql += "$\(binds.count)"
        }

        /// `nil` binds SQL NULL. Spelled out so that the compiler does not take an optional
        /// filter for a debug description spliced into the text.
        public mutating func appendInterpolation<Wrapped: PostgresEncodable>(_ value: Wrapped?) {
            binds.append(value.postgresBind)
            sql += "$\(binds.count)"
        }
    }
}
