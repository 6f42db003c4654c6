//! Durable records in one SQLite file.
