/// The rows of one result, copied out of libpq's result so it can be freed at once.
///
/// All cells live in one contiguous buffer; a row is an index into it. Decoding reads the binary
/// wire form in place.
public struct PostgresRows: Sendable, RandomAccessCollection {
    public let columns: [String]
    let types: [PostgresType]
    let storage: [UInt8]
    /// (offset, length) per cell, row-major; length -1 is NULL.
    let cells: [(Int, Int)]
    /// Rows changed by an INSERT/UPDATE/DELETE (PQcmdTuples), or nil for other commands.
    public let affectedRows: Int?

    public var startIndex: Int { 0 }
    public var endIndex: Int { columns.isEmpty ? 0 : cells.count / columns.count }
    public subscript(position: Int) -> PostgresRow { PostgresRow(rows: self, index: position) }

    func columnIndex(_ name: String) throws -> Int {
        guard let index = columns.firstIndex(of: name) else {
            throw PostgresError.decoding("no column named \(name); columns are \(columns)")
        }
        return index
    }
}

/// One row of a `PostgresRows`.
public struct PostgresRow: Sendable {
    let rows: PostgresRows
    let index: Int

    public var columns: [String] { rows.columns }

    /// Decodes column `column`. NULL decodes only into an `Optional`.
    public func decode<T: PostgresDecodable>(_: T.Type = T.self, at column: Int) throws -> T {
        let (offset, length) = rows.cells[index * rows.columns.count + column]
        if length < 0 {
            guard let nullable = T.self as? any PostgresNullDecodable.Type, let null = nullable.null as? T else {
                throw PostgresError.decoding("column \(rows.columns[column]) is NULL; decode it as an Optional")
            }
            return null
        }
        let type = rows.types[column]
        return try rows.storage.withUnsafeBytes { buffer in
            try T.decode(UnsafeRawBufferPointer(rebasing: buffer[offset..<offset + length]), type: type)
        }
    }

    public func decode<T: PostgresDecodable>(_: T.Type = T.self, _ name: String) throws -> T {
        try decode(T.self, at: try rows.columnIndex(name))
    }

    /// True when the column is SQL NULL.
    public func isNull(at column: Int) -> Bool {
        rows.cells[index * rows.columns.count + column].1 < 0
    }
}
