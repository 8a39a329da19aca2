//! Loading the registry from TOML (and CSV for the big tables). Being written.

use super::Registry;

/// A named text: the loader never opens files itself (this crate does no I/O).
#[derive(Debug, Clone)]
pub struct Source {
    /// How errors name the file, e.g. `registry.toml` or a path.
    pub name: String,
    pub text: String,
}

/// One problem, located: `registry.toml:41: facility "wh-9": unknown town "jingshn"`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {message}")]
pub struct LoadError {
    pub file: String,
    pub line: usize,
    pub message: String,
}

/// Every problem found, not just the first, so an operator fixes a spreadsheet in one go.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", .0.iter().map(|e| e.to_string()).collect::<Vec<_>>().join("\n"))]
pub struct LoadErrors(pub Vec<LoadError>);

/// Loads a registry from `main`; `read` fetches files it names (CSV tables), relative
/// to `main`'s location, so the caller decides how files are read.
pub fn load_registry(
    _main: &Source,
    _read: &mut dyn FnMut(&str) -> Result<Source, String>,
) -> Result<Registry, LoadErrors> {
    Err(LoadErrors(vec![]))
}
