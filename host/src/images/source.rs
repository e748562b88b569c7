//! Telling apart the three ways an image item can be written.

use super::ImageError;
use base64::Engine as _;

/// Where an item's bytes come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Source {
    /// Fetched over HTTP(S).
    Url(String),
    /// Carried in the request (data URI or raw base64), already decoded.
    Inline(Vec<u8>),
}

/// Classifies an item: an `http(s)://` URL, a `data:image/...;base64,` URI, or raw base64.
pub fn parse(item: &str) -> Result<Source, ImageError> {
    let trimmed = item.trim();
    let lower = trimmed.get(..8).unwrap_or(trimmed).to_ascii_lowercase();
    if lower.starts_with("http://") || lower.starts_with("https://") {
        return Ok(Source::Url(trimmed.to_string()));
    }
    let payload = if lower.starts_with("data:") {
        let (header, data) = trimmed.split_once(',').ok_or_else(|| {
            ImageError(
                "data URI has no ',' before its data (expected data:image/...;base64,...)".into(),
            )
        })?;
        let header = header.to_ascii_lowercase();
        if !header.starts_with("data:image/") || !header.ends_with(";base64") {
            return Err(ImageError(format!(
                "data URI must be of the form data:image/<type>;base64,<data>, got '{}'",
                header.chars().take(60).collect::<String>()
            )));
        }
        data
    } else {
        trimmed
    };
    // Whitespace (line-wrapped base64) is tolerated; URL-safe alphabets too.
    let compact: String = payload
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    if compact.is_empty() {
        return Err(ImageError("image is empty".into()));
    }
    let engines = [
        base64::engine::general_purpose::STANDARD,
        base64::engine::general_purpose::STANDARD_NO_PAD,
        base64::engine::general_purpose::URL_SAFE,
        base64::engine::general_purpose::URL_SAFE_NO_PAD,
    ];
    engines
        .iter()
        .find_map(|e| e.decode(&compact).ok())
        .map(Source::Inline)
        .ok_or_else(|| {
            ImageError(
                "not a valid image: expected an http:// or https:// URL, a \
                 data:image/...;base64, URI, or base64-encoded image bytes"
                    .into(),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn three_forms() {
        assert_eq!(
            parse(" https://example.com/a.png").unwrap(),
            Source::Url("https://example.com/a.png".into())
        );
        assert_eq!(
            parse("data:image/png;base64,AQID").unwrap(),
            Source::Inline(vec![1, 2, 3])
        );
        assert_eq!(parse("AQID").unwrap(), Source::Inline(vec![1, 2, 3]));
        assert_eq!(parse("AQI").unwrap(), Source::Inline(vec![1, 2]));
    }

    #[test]
    fn bad_forms_say_what_is_expected() {
        assert!(parse("data:text/plain;base64,AQID")
            .unwrap_err()
            .0
            .contains("data:image/"));
        assert!(parse("ftp://x/y.png").unwrap_err().0.contains("http://"));
        assert!(parse("a cat on a mat").unwrap_err().0.contains("base64"));
        assert!(parse("  ").unwrap_err().0.contains("empty"));
    }
}
