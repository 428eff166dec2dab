//! Request bodies in any of the spellings Consul accepts (see
//! [`normalize_keys`](crate::agent::definition::normalize_keys)).

use axum::http::StatusCode;
use serde_json::Value;

use super::error::ApiError;

/// Decodes a request body, whatever the case of its field names.
pub fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let fail = |e: serde_json::Error| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("Request decode failed: {e}"),
        )
    };
    let v: Value = serde_json::from_slice(bytes).map_err(fail)?;
    crate::agent::definition::decode(v).map_err(fail)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_json_is_a_400() {
        let e = body::<Value>(b"{nope").unwrap_err();
        assert_eq!(e.0, StatusCode::BAD_REQUEST);
        assert!(e.1.starts_with("Request decode failed"));
    }
}
