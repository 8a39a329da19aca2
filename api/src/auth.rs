//! Bearer-token authentication and roles (docs/design.md#auth-and-privacy).
//!
//! Tokens come from the configuration (the `server` crate converts its config into an
//! [`AuthConfig`]). A presented token is compared with every configured one in constant
//! time, and tokens never reach a log line: they are `SecretString`s, exposed only to
//! that comparison.
//!
//! Rules:
//! - `GET`/`HEAD` need any valid token, or none when `public_read` is on (wall displays);
//! - every other method needs a valid token; the handler then checks the role (an
//!   officer may change only its own towns, an admin any);
//! - a token that is present but wrong is a 401 even when reads are public, so a
//!   misconfigured display is told rather than silently served as anonymous.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::{Method, header, request::Parts};
use axum::middleware::Next;
use axum::response::Response;
use reserve::TownId;
use secrecy::{ExposeSecret as _, SecretString};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use utoipa::ToSchema;

use crate::AppState;
use crate::error::ApiError;

/// What a token may do. Ordered: each role may do what the ones before it may.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads the wall display's figures (not notifications or rejects, which name
    /// people or carry raw input), runs what-if scenarios.
    Viewer,
    /// A town officer: also reports sheltered people, acknowledges alerts and silences
    /// them, and reads notifications and rejects, for the towns of its token.
    Officer,
    /// Everything, for every town.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Officer => "officer",
            Role::Admin => "admin",
        }
    }
}

/// Who may use the API.
#[derive(Debug, Clone, Default)]
pub struct AuthConfig {
    /// Let `GET` requests through without a token (wall displays, Grafana links).
    pub public_read: bool,
    pub tokens: Vec<TokenEntry>,
}

/// One configured bearer token.
#[derive(Debug, Clone)]
pub struct TokenEntry {
    /// Who holds it; appears in logs instead of the token.
    pub name: String,
    pub role: Role,
    /// The secret. Empty tokens never match.
    pub token: SecretString,
    /// The towns an `officer` is responsible for; ignored for other roles.
    pub towns: Vec<TownId>,
}

impl AuthConfig {
    /// The entry whose token equals `presented`. Every entry is compared, each in
    /// constant time, so the timing tells neither the token nor which entry matched.
    fn find(&self, presented: &[u8]) -> Option<&TokenEntry> {
        let mut found = None;
        for entry in &self.tokens {
            let token = entry.token.expose_secret().as_bytes();
            let equal = bool::from(token.ct_eq(presented)) && !token.is_empty();
            if equal && found.is_none() {
                found = Some(entry);
            }
        }
        found
    }
}

/// The authenticated caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// No token, let through because reads are public.
    Public,
    Token {
        name: String,
        role: Role,
        towns: Vec<TownId>,
    },
}

impl Caller {
    pub fn name(&self) -> &str {
        match self {
            Caller::Public => "public",
            Caller::Token { name, .. } => name,
        }
    }

    /// Whether the caller may change figures of `town` (sheltered count, its
    /// alerts and silences).
    pub fn require_town(&self, town: &TownId) -> Result<(), ApiError> {
        match self {
            Caller::Public => Err(ApiError::MissingToken),
            Caller::Token {
                role: Role::Admin, ..
            } => Ok(()),
            Caller::Token {
                role: Role::Officer,
                towns,
                name,
            } => {
                if towns.contains(town) {
                    Ok(())
                } else {
                    Err(ApiError::Forbidden(format!(
                        "officer {name:?} is not responsible for town {town}"
                    )))
                }
            }
            Caller::Token {
                role: Role::Viewer,
                name,
                ..
            } => Err(ApiError::Forbidden(format!(
                "{name:?} has role viewer; changing town figures needs officer or admin"
            ))),
        }
    }
}

/// Put in the request's extensions by [`authenticate`]; a handler takes it as an
/// argument to learn who is calling.
impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| ApiError::Internal("route is not behind authentication".into()))
    }
}

/// Middleware in front of the reads that name people or carry raw gateway input
/// (notifications, rejects), behind [`authenticate`]: a token is needed whatever
/// `public_read` says, and a viewer's will not do (a wall display's token must not
/// list phone numbers). The handler narrows an officer to its towns ([`RowScope`]).
pub(crate) async fn require_personal_reader(
    caller: Caller,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    caller.row_scope()?;
    Ok(next.run(request).await)
}

/// Which rows of a personal read a caller sees.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RowScope {
    /// An admin: every row.
    All,
    /// An officer: the rows of its towns.
    Towns(Vec<TownId>),
}

impl RowScope {
    /// Whether a row of `town` (an id as stored; `None` for a row of no known town) is
    /// in scope.
    pub fn covers(&self, town: Option<&str>) -> bool {
        match self {
            RowScope::All => true,
            RowScope::Towns(towns) => {
                town.is_some_and(|town| towns.iter().any(|t| t.as_str() == town))
            }
        }
    }
}

impl Caller {
    /// What the caller may read of rows that name people: officers their towns', admins
    /// all; nobody else anything.
    pub fn row_scope(&self) -> Result<RowScope, ApiError> {
        match self {
            Caller::Public => Err(ApiError::MissingToken),
            Caller::Token {
                role: Role::Viewer,
                name,
                ..
            } => Err(ApiError::Forbidden(format!(
                "{name:?} has role viewer; this list names people or shows raw gateway input \
                 and needs officer (own towns) or admin"
            ))),
            Caller::Token {
                role: Role::Officer,
                towns,
                ..
            } => Ok(RowScope::Towns(towns.clone())),
            Caller::Token {
                role: Role::Admin, ..
            } => Ok(RowScope::All),
        }
    }
}

/// Middleware in front of every protected route: authenticates, applies the public-read
/// rule, and hands the [`Caller`] to the handler.
pub(crate) async fn authenticate(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    let caller = caller_of(&state.auth(), request.method(), request.headers())?;
    request.extensions_mut().insert(caller);
    Ok(next.run(request).await)
}

fn caller_of(
    auth: &AuthConfig,
    method: &Method,
    headers: &axum::http::HeaderMap,
) -> Result<Caller, ApiError> {
    let read = method == Method::GET || method == Method::HEAD;
    let Some(value) = headers.get(header::AUTHORIZATION) else {
        return if read && auth.public_read {
            Ok(Caller::Public)
        } else {
            Err(ApiError::MissingToken)
        };
    };
    let presented = bearer_token(value.as_bytes()).ok_or(ApiError::InvalidToken)?;
    let entry = auth.find(presented).ok_or(ApiError::InvalidToken)?;
    Ok(Caller::Token {
        name: entry.name.clone(),
        role: entry.role,
        towns: entry.towns.clone(),
    })
}

/// The token of an `Authorization: Bearer <token>` header (scheme case-insensitive).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    if value.len() <= SCHEME.len() || !value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    let token = value[SCHEME.len()..].trim_ascii();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue};

    fn town(id: &str) -> TownId {
        TownId::parse(id).unwrap()
    }

    fn config(public_read: bool) -> AuthConfig {
        AuthConfig {
            public_read,
            tokens: vec![
                TokenEntry {
                    name: "ops".into(),
                    role: Role::Admin,
                    token: "admin-secret".into(),
                    towns: vec![],
                },
                TokenEntry {
                    name: "li-wei".into(),
                    role: Role::Officer,
                    token: "officer-secret".into(),
                    towns: vec![town("jingshan")],
                },
                TokenEntry {
                    name: "unset".into(),
                    role: Role::Admin,
                    token: SecretString::default(),
                    towns: vec![],
                },
            ],
        }
    }

    #[test]
    fn callers_by_method_header_and_public_read() {
        let officer = Caller::Token {
            name: "li-wei".into(),
            role: Role::Officer,
            towns: vec![town("jingshan")],
        };
        // (public_read, method, Authorization, expected caller or error code)
        type Want<'a> = Result<&'a Caller, &'a str>;
        let cases: &[(bool, Method, Option<&str>, Want)] = &[
            (true, Method::GET, None, Ok(&Caller::Public)),
            (true, Method::HEAD, None, Ok(&Caller::Public)),
            (false, Method::GET, None, Err("unauthorized")),
            (true, Method::PUT, None, Err("unauthorized")),
            (true, Method::POST, None, Err("unauthorized")),
            (
                true,
                Method::GET,
                Some("Bearer wrong"),
                Err("invalid_token"),
            ),
            (
                true,
                Method::GET,
                Some("Basic b2ZmaWNlcg=="),
                Err("invalid_token"),
            ),
            (true, Method::GET, Some("Bearer "), Err("invalid_token")),
            // An empty configured token matches nothing, not even an empty one.
            (true, Method::PUT, Some("Bearer"), Err("invalid_token")),
            (
                false,
                Method::PUT,
                Some("Bearer officer-secret"),
                Ok(&officer),
            ),
            (
                false,
                Method::GET,
                Some("bearer  officer-secret "),
                Ok(&officer),
            ),
            (
                false,
                Method::GET,
                Some("Bearer officer-secret2"),
                Err("invalid_token"),
            ),
            (
                false,
                Method::GET,
                Some("Bearer officer-secre"),
                Err("invalid_token"),
            ),
        ];
        for (public_read, method, authorization, want) in cases {
            let mut headers = HeaderMap::new();
            if let Some(a) = authorization {
                headers.insert(header::AUTHORIZATION, HeaderValue::from_str(a).unwrap());
            }
            let got = caller_of(&config(*public_read), method, &headers);
            let got = got.as_ref().map_err(|e| e.code());
            assert_eq!(
                got,
                want.map_err(|e| e),
                "{public_read} {method} {authorization:?}"
            );
        }
    }

    #[test]
    fn officers_change_only_their_towns() {
        let caller = |role| Caller::Token {
            name: "x".into(),
            role,
            towns: vec![town("jingshan")],
        };
        let cases: &[(Caller, &str, Result<(), &str>)] = &[
            (caller(Role::Admin), "donghua", Ok(())),
            (caller(Role::Officer), "jingshan", Ok(())),
            (caller(Role::Officer), "donghua", Err("forbidden")),
            (caller(Role::Viewer), "jingshan", Err("forbidden")),
            (Caller::Public, "jingshan", Err("unauthorized")),
        ];
        for (caller, t, want) in cases {
            let got = caller.require_town(&town(t)).map_err(|e| e.code());
            assert_eq!(got, *want, "{caller:?} on {t}");
        }
    }

    #[test]
    fn debug_output_hides_tokens() {
        let printed = format!("{:?}", config(true));
        assert!(!printed.contains("secret"), "{printed}");
        assert!(printed.contains("li-wei"), "{printed}");
    }
}
