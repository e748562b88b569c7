use super::*;
use base64::Engine as _;
use serde_json::json;

fn parse(v: Value) -> Result<EmbeddingsRequest, ApiError> {
    EmbeddingsRequest::parse(&v, 4)
}

#[test]
fn accepts_string_and_list_inputs() {
    let r = parse(json!({"input": "hi", "model": "m"})).unwrap();
    assert_eq!(r.input, vec!["hi"]);
    assert_eq!(r.encoding_format, EncodingFormat::Float);
    let r =
        parse(json!({"input": ["a", "b"], "encoding_format": "base64", "dimensions": 8})).unwrap();
    assert_eq!(r.input.len(), 2);
    assert_eq!(r.encoding_format, EncodingFormat::Base64);
    assert_eq!(r.dimensions, Some(8));
}

#[test]
fn input_types_of_openai_and_cohere_clients_are_read() {
    for (given, want) in [
        ("query", InputType::Query),
        ("search_query", InputType::Query),
        ("document", InputType::Document),
        ("search_document", InputType::Document),
        ("clustering", InputType::Clustering),
        ("image", InputType::Image),
    ] {
        let r = parse(json!({"input": "a", "input_type": given})).unwrap();
        assert_eq!(r.input_type, Some(want), "{given}");
    }
    assert_eq!(parse(json!({"input": "a"})).unwrap().input_type, None);
    let e = parse(json!({"input": "a", "input_type": "summary"})).unwrap_err();
    assert_eq!((e.status(), e.param.as_deref()), (400, Some("input_type")));
    assert!(e.message.contains("'summary'"), "{}", e.message);
}

#[test]
fn errors_name_field_and_index() {
    let e = parse(json!({"input": ["a", 3]})).unwrap_err();
    assert_eq!((e.status(), e.param.as_deref()), (400, Some("input")));
    assert!(e.message.contains("input[1]"), "{}", e.message);
    let e = parse(json!({"input": "a", "encoding_format": "hex"})).unwrap_err();
    assert_eq!(e.param.as_deref(), Some("encoding_format"));
    let e = parse(json!({"input": "a", "dimensions": 0})).unwrap_err();
    assert_eq!(e.param.as_deref(), Some("dimensions"));
    let e = parse(json!({"input": []})).unwrap_err();
    assert!(e.message.contains("empty"));
    let e = parse(json!({"input": vec!["a"; 5]})).unwrap_err();
    assert_eq!(e.status(), 413);
    let e = parse(json!(["a"])).unwrap_err();
    assert_eq!(e.param.as_deref(), Some("body"));
    let e = parse(json!({"input": "a", "model": 5})).unwrap_err();
    assert!(e.message.contains("model must be a string"));
}

#[test]
fn base64_is_little_endian_float32() {
    let Embedding::Base64(v) = Writer::Base64.write(vec![1.0, -2.5]) else {
        panic!("expected base64")
    };
    let bytes = base64::engine::general_purpose::STANDARD.decode(v).unwrap();
    assert_eq!(
        bytes,
        [1.0f32.to_le_bytes(), (-2.5f32).to_le_bytes()].concat()
    );
}

#[test]
fn normalize_handles_zero() {
    let mut v = vec![3.0, 4.0];
    normalize(&mut v);
    assert_eq!(v, vec![0.6, 0.8]);
    let mut z = vec![0.0, 0.0];
    normalize(&mut z);
    assert_eq!(z, vec![0.0, 0.0]);
}
