//! The queue's error replies: a Taskcluster error code, its HTTP status, and the body shape of
//! `taskcluster-lib-api` (`{code, message, requestInfo: {method, params, payload, time}}`, the
//! message ending with the method / errorCode / statusCode / time block).
use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::model::fmt_time;

/// An error reply before it knows which request it answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ApiError {
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    pub fn malformed(message: impl Into<String>) -> Self {
        Self::new("MalformedPayload", message)
    }

    pub fn bad_param(message: impl Into<String>) -> Self {
        Self::new("InvalidRequestArguments", message)
    }

    pub fn schema(message: impl Into<String>) -> Self {
        Self::new("InputValidationError", message)
    }

    pub fn input(message: impl Into<String>) -> Self {
        Self::new("InputError", message)
    }

    pub fn auth(message: impl Into<String>) -> Self {
        Self::new("AuthenticationFailed", message)
    }

    pub fn scopes(message: impl Into<String>) -> Self {
        Self::new("InsufficientScopes", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new("ResourceNotFound", message)
    }

    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new("RequestConflict", message)
    }

    pub fn expired(message: impl Into<String>) -> Self {
        Self::new("ResourceExpired", message)
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self::new("InternalServerError", message)
    }

    pub fn status(&self) -> StatusCode {
        status_of(self.code)
    }

    /// The reply, as `taskcluster-lib-api` renders it for API method `method`.
    pub fn render(
        &self,
        method: &str,
        params: &Value,
        payload: &Value,
        now: DateTime<Utc>,
    ) -> Response {
        let status = self.status();
        let time = fmt_time(now);
        let message = format!(
            "{}\n\n---\n\n* method:     {method}\n* errorCode:  {}\n* statusCode: {}\n* time:       {time}",
            self.message,
            self.code,
            status.as_u16()
        );
        let body = json!({
            "code": self.code,
            "message": message,
            "requestInfo": {"method": method, "params": params, "payload": payload, "time": time},
        });
        let mut response = (status, axum::Json(body)).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("hawk"));
        }
        response
    }
}

/// The error code an injected fault of HTTP status `status` answers with.
pub(crate) fn code_for(status: u16) -> &'static str {
    match status {
        400 => "InputError",
        401 => "AuthenticationFailed",
        403 => "InsufficientScopes",
        404 => "ResourceNotFound",
        409 => "RequestConflict",
        410 => "ResourceExpired",
        413 => "InputTooLarge",
        429 => "TooManyRequests",
        _ => "InternalServerError",
    }
}

/// HTTP status of each error code (`taskcluster-lib-api`'s table, plus the codes the emulator's
/// fault injection uses).
pub(crate) fn status_of(code: &str) -> StatusCode {
    match code {
        "MalformedPayload" | "InvalidRequestArguments" | "InputValidationError" | "InputError" => {
            StatusCode::BAD_REQUEST
        }
        "AuthenticationFailed" => StatusCode::UNAUTHORIZED,
        "InsufficientScopes" => StatusCode::FORBIDDEN,
        "ResourceNotFound" => StatusCode::NOT_FOUND,
        "RequestConflict" => StatusCode::CONFLICT,
        "ResourceExpired" => StatusCode::GONE,
        "InputTooLarge" => StatusCode::PAYLOAD_TOO_LARGE,
        "TooManyRequests" => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}
