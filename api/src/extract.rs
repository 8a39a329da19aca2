//! Extractors whose rejections are [`ApiError`]s: the JSON error shape everywhere, and
//! messages that name the field at fault (axum's own say only that something failed).

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::{header, request::Parts};
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// The body limit of a route in bytes, put in the request's extensions beside its
/// `DefaultBodyLimit` so that a refusal can say what the limit is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BodyLimit(pub usize);

/// A JSON request body, decoded with `serde_path_to_error`: a body that is not JSON is a
/// 400 (`invalid_json`), JSON of the wrong shape a 422 (`invalid_body`) naming the field.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let JsonBytes(bytes) = JsonBytes::from_request(req, state).await?;
        decode_json(&bytes).map(ApiJson)
    }
}

/// A JSON request body as bytes, for a route that decodes it with its own rules (a
/// count entered by hand goes through `reserve::wire`, as a gateway's reading does):
/// `application/json` or 415, within the route's body limit or 413.
#[derive(Debug, Clone)]
pub struct JsonBytes(pub Bytes);

impl<S> FromRequest<S> for JsonBytes
where
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        if !is_json(req.headers().get(header::CONTENT_TYPE)) {
            return Err(ApiError::UnsupportedMediaType);
        }
        // The route's `DefaultBodyLimit`, to name it when a body is over it.
        let limit = req
            .extensions()
            .get::<BodyLimit>()
            .map_or(crate::limits::BODY_LIMIT, |l| l.0);
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(|rejection| match rejection {
                BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => {
                    ApiError::BodyTooLarge { limit }
                }
                rejection => ApiError::BadRequest {
                    code: "invalid_json",
                    message: format!("cannot read the request body: {}", rejection.body_text()),
                    field: None,
                },
            })?;
        Ok(JsonBytes(bytes))
    }
}

fn is_json(content_type: Option<&header::HeaderValue>) -> bool {
    let Some(value) = content_type.and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = value.split(';').next().unwrap_or("").trim();
    // `get`, not indexing: a cut inside a character is `None`, never a panic (`to_str`
    // admits only visible ASCII today, but this must not rest on that).
    let suffix = essence
        .len()
        .checked_sub(5)
        .and_then(|at| essence.get(at..));
    essence.eq_ignore_ascii_case("application/json")
        || (essence.len() > 5
            && suffix.is_some_and(|s| s.eq_ignore_ascii_case("+json"))
            && essence
                .get(..12)
                .is_some_and(|p| p.eq_ignore_ascii_case("application/")))
}

/// Decodes a JSON document into `T`, naming the field at fault.
pub(crate) fn decode_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let field = field_of(e.path());
        let inner = e.into_inner();
        json_error(inner, field)
    })?;
    de.end().map_err(|e| json_error(e, None))?;
    Ok(value)
}

fn json_error(e: serde_json::Error, field: Option<String>) -> ApiError {
    use serde_json::error::Category;
    match e.classify() {
        Category::Data => ApiError::InvalidBody {
            message: match &field {
                Some(f) => format!("{f}: {e}"),
                None => e.to_string(),
            },
            field,
        },
        Category::Syntax | Category::Eof | Category::Io => ApiError::BadRequest {
            code: "invalid_json",
            message: format!("request body is not valid JSON: {e}"),
            field: None,
        },
    }
}

/// The dotted path of a deserialisation error, `None` at the top level (where serde
/// reports "missing field `x`" and "unknown field `x`", which name the field already).
fn field_of(path: &serde_path_to_error::Path) -> Option<String> {
    let path = path.to_string();
    (path != ".").then_some(path)
}

/// A query string decoded with `serde_path_to_error`, so a bad parameter is named:
/// 400 `invalid_query` with `field`.
#[derive(Debug, Clone)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded::Deserializer::new(form_urlencoded::parse(query.as_bytes()));
        serde_path_to_error::deserialize(de)
            .map(ApiQuery)
            .map_err(|e| {
                let field = field_of(e.path());
                let inner = e.into_inner();
                ApiError::BadRequest {
                    code: "invalid_query",
                    message: match &field {
                        Some(f) => format!("query parameter {f}: {inner}"),
                        None => format!("query: {inner}"),
                    },
                    field,
                }
            })
    }
}

/// A path parameter. Ids are plain strings here: an id that is not even a valid slug
/// is simply unknown, a 404 from the handler, not a 400.
#[derive(Debug, Clone)]
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| ApiPath(value))
            .map_err(|rejection| ApiError::BadRequest {
                code: "invalid_path",
                message: rejection.body_text(),
                field: None,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Body {
        sheltered: u64,
        #[serde(default)]
        inner: Option<Inner>,
    }

    #[derive(Debug, serde::Deserialize, PartialEq)]
    struct Inner {
        factor: f64,
    }

    #[test]
    fn json_errors_name_the_field_and_tell_syntax_from_shape() {
        // (body, status, code, field, message contains)
        let cases: &[(&str, u16, &str, Option<&str>, &str)] = &[
            (
                r#"{"sheltered": "many"}"#,
                422,
                "invalid_body",
                Some("sheltered"),
                "sheltered: invalid type",
            ),
            (
                r#"{"sheltered": -5}"#,
                422,
                "invalid_body",
                Some("sheltered"),
                "sheltered: invalid value",
            ),
            (
                r#"{}"#,
                422,
                "invalid_body",
                None,
                "missing field `sheltered`",
            ),
            (
                r#"{"shelterd": 5}"#,
                422,
                "invalid_body",
                Some("shelterd"),
                "unknown field `shelterd`",
            ),
            (
                r#"{"sheltered": 5, "inner": {}}"#,
                422,
                "invalid_body",
                Some("inner"),
                "inner: missing field `factor`",
            ),
            (
                r#"{"sheltered": 5, "inner": {"factor": "x"}}"#,
                422,
                "invalid_body",
                Some("inner.factor"),
                "inner.factor: invalid type",
            ),
            (
                r#"{"sheltered": 5"#,
                400,
                "invalid_json",
                None,
                "not valid JSON",
            ),
            (
                r#"{"sheltered": 5} trailing"#,
                400,
                "invalid_json",
                None,
                "not valid JSON",
            ),
            ("", 400, "invalid_json", None, "not valid JSON"),
        ];
        for (body, status, code, field, contains) in cases {
            let err = decode_json::<Body>(body.as_bytes()).unwrap_err();
            assert_eq!(err.status().as_u16(), *status, "{body}");
            assert_eq!(err.code(), *code, "{body}");
            let detail = err.body().error;
            assert_eq!(detail.field.as_deref(), *field, "{body}");
            assert!(
                detail.message.contains(contains),
                "{body}: {}",
                detail.message
            );
        }
        assert_eq!(
            decode_json::<Body>(br#"{"sheltered": 5000}"#).unwrap(),
            Body {
                sheltered: 5000,
                inner: None
            }
        );
    }

    #[test]
    fn json_content_types() {
        let cases: &[(Option<&str>, bool)] = &[
            (Some("application/json"), true),
            (Some("application/json; charset=utf-8"), true),
            (Some("Application/JSON"), true),
            (Some("application/merge-patch+json"), true),
            (Some("text/plain"), false),
            (Some("application/x-www-form-urlencoded"), false),
            (Some("+json"), false),
            (None, false),
        ];
        for (value, want) in cases {
            let header = value.map(|v| header::HeaderValue::from_str(v).unwrap());
            assert_eq!(is_json(header.as_ref()), *want, "{value:?}");
        }
    }
}
