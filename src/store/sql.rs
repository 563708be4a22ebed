//! sqlx implementation of the [`super::Store`] trait (SQLite and Postgres). Being written.
