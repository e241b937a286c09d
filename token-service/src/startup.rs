//! Wiring: database, keys, routes, the serving loop.
