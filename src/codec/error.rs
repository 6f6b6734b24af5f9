//! Reply codes (spec names, `amqp-rabbitmq-0.9.1.json` "constants") and the
//! codec's error value. Every error the codec returns names the reply code the
//! broker must close with, so no layer above has to guess.

use std::borrow::Cow;
use std::fmt;

/// AMQP 0-9-1 reply codes, as named in the spec.
pub struct ReplyCode;

impl ReplyCode {
    /// Normal completion.
    pub const REPLY_SUCCESS: u16 = 200;
    /// Soft: the message body was too large.
    pub const CONTENT_TOO_LARGE: u16 = 311;
    /// Soft (RabbitMQ): mandatory message could not be routed.
    pub const NO_ROUTE: u16 = 312;
    /// Soft: immediate message had no consumer.
    pub const NO_CONSUMERS: u16 = 313;
    /// Hard: an operator closed the connection.
    pub const CONNECTION_FORCED: u16 = 320;
    /// Hard: invalid virtual host path.
    pub const INVALID_PATH: u16 = 402;
    /// Soft: access to the entity was refused.
    pub const ACCESS_REFUSED: u16 = 403;
    /// Soft: the entity does not exist.
    pub const NOT_FOUND: u16 = 404;
    /// Soft: the entity is locked by another connection.
    pub const RESOURCE_LOCKED: u16 = 405;
    /// Soft: a precondition (flags, arguments, state) failed.
    pub const PRECONDITION_FAILED: u16 = 406;
    /// Hard: a malformed frame.
    pub const FRAME_ERROR: u16 = 501;
    /// Hard: a frame with malformed field values.
    pub const SYNTAX_ERROR: u16 = 502;
    /// Hard: an invalid sequence of frames or methods.
    pub const COMMAND_INVALID: u16 = 503;
    /// Hard: a channel that is not open, or a bad channel number.
    pub const CHANNEL_ERROR: u16 = 504;
    /// Hard: a frame arrived that the state machine did not expect.
    pub const UNEXPECTED_FRAME: u16 = 505;
    /// Hard: the server ran out of a resource.
    pub const RESOURCE_ERROR: u16 = 506;
    /// Hard: the operation is not allowed.
    pub const NOT_ALLOWED: u16 = 530;
    /// Hard: the method or feature is not implemented.
    pub const NOT_IMPLEMENTED: u16 = 540;
    /// Hard: an internal error.
    pub const INTERNAL_ERROR: u16 = 541;

    /// True for the codes the spec classes as hard errors (close the
    /// connection rather than the channel).
    pub fn is_hard(code: u16) -> bool {
        matches!(
            code,
            Self::CONNECTION_FORCED
                | Self::INVALID_PATH
                | Self::FRAME_ERROR
                | Self::SYNTAX_ERROR
                | Self::COMMAND_INVALID
                | Self::CHANNEL_ERROR
                | Self::UNEXPECTED_FRAME
                | Self::RESOURCE_ERROR
                | Self::NOT_ALLOWED
                | Self::NOT_IMPLEMENTED
                | Self::INTERNAL_ERROR
        )
    }

    /// The spec's name for a reply code, as RabbitMQ puts it in reply texts.
    pub fn name(code: u16) -> &'static str {
        match code {
            200 => "REPLY_SUCCESS",
            311 => "CONTENT_TOO_LARGE",
            312 => "NO_ROUTE",
            313 => "NO_CONSUMERS",
            320 => "CONNECTION_FORCED",
            402 => "INVALID_PATH",
            403 => "ACCESS_REFUSED",
            404 => "NOT_FOUND",
            405 => "RESOURCE_LOCKED",
            406 => "PRECONDITION_FAILED",
            501 => "FRAME_ERROR",
            502 => "SYNTAX_ERROR",
            503 => "COMMAND_INVALID",
            504 => "CHANNEL_ERROR",
            505 => "UNEXPECTED_FRAME",
            506 => "RESOURCE_ERROR",
            530 => "NOT_ALLOWED",
            540 => "NOT_IMPLEMENTED",
            541 => "INTERNAL_ERROR",
            _ => "UNKNOWN",
        }
    }
}

/// An AMQP error: the reply code to close with, a human text, and the
/// class/method that caused it (0/0 when not tied to a method).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// Reply code (see [`ReplyCode`]).
    pub code: u16,
    /// Reply text, without the `CODE_NAME - ` prefix RabbitMQ adds on the wire.
    pub text: Cow<'static, str>,
    /// Class id of the offending method, or 0.
    pub class_id: u16,
    /// Method id of the offending method, or 0.
    pub method_id: u16,
}

impl Error {
    /// A new error with the given code and text and no class/method.
    pub fn new(code: u16, text: impl Into<Cow<'static, str>>) -> Error {
        Error {
            code,
            text: text.into(),
            class_id: 0,
            method_id: 0,
        }
    }

    /// 501 FRAME_ERROR.
    pub fn frame(text: impl Into<Cow<'static, str>>) -> Error {
        Error::new(ReplyCode::FRAME_ERROR, text)
    }

    /// 502 SYNTAX_ERROR.
    pub fn syntax(text: impl Into<Cow<'static, str>>) -> Error {
        Error::new(ReplyCode::SYNTAX_ERROR, text)
    }

    /// Attach the class and method that caused the error.
    pub fn with_method(mut self, class_id: u16, method_id: u16) -> Error {
        self.class_id = class_id;
        self.method_id = method_id;
        self
    }

    /// True when the error closes the whole connection.
    pub fn is_hard(&self) -> bool {
        ReplyCode::is_hard(self.code)
    }

    /// The reply text as RabbitMQ sends it: `NOT_FOUND - no queue 'x' ...`,
    /// cut to fit a shortstr.
    pub fn reply_text(&self) -> String {
        if self.text.is_empty() {
            // RabbitMQ's text for an internal failure is the bare name.
            return ReplyCode::name(self.code).to_string();
        }
        let mut s = format!("{} - {}", ReplyCode::name(self.code), self.text);
        if s.len() > 255 {
            let mut cut = 255;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            s.truncate(cut);
        }
        s
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code, self.reply_text())?;
        if self.class_id != 0 {
            write!(f, " (class {} method {})", self.class_id, self.method_id)?;
        }
        Ok(())
    }
}

impl std::error::Error for Error {}

/// Shorthand result type for codec functions.
pub type Result<T, E = Error> = std::result::Result<T, E>;
