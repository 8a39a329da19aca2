//! HTTP API, OpenAPI, auth, metrics and the built-in wall board.
