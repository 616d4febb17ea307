//! Card profiles: generated populations, files in TOML and JSON, validation.

use simcard::CardProfile;
use simcard::profile::{load, luhn_digit, to_toml};

#[test]
fn generated_cards_are_valid_distinct_and_reproducible() {
    let cards = CardProfile::generate(0, 500);
    assert_eq!(cards.len(), 500);
    let mut iccids = std::collections::HashSet::new();
    let mut imsis = std::collections::HashSet::new();
    let mut keys = std::collections::HashSet::new();
    for c in &cards {
        c.validate().expect("valid");
        let (body, check) = c.iccid.split_at(c.iccid.len() - 1);
        assert_eq!(check, luhn_digit(body).to_string(), "{}", c.iccid);
        assert!(c.imsi.starts_with("00101") && c.imsi.len() == 15);
        iccids.insert(c.iccid.clone());
        imsis.insert(c.imsi.clone());
        keys.insert(c.k);
    }
    assert_eq!((iccids.len(), imsis.len(), keys.len()), (500, 500, 500));
    assert_eq!(CardProfile::generated(42), CardProfile::generate(42, 1)[0]);
}

#[test]
fn luhn_known_answers() {
    // The classic example "7992739871" has check digit 3.
    assert_eq!(luhn_digit("7992739871"), 3);
    // The test card number 4111 1111 1111 1111.
    assert_eq!(luhn_digit("411111111111111"), 1);
}

#[test]
fn toml_and_json_files_round_trip() {
    let dir = std::env::temp_dir().join(format!("simcard-profile-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let cards = CardProfile::generate(10, 3);
    let toml_path = dir.join("cards.toml");
    std::fs::write(&toml_path, to_toml(&cards)).expect("write");
    assert_eq!(load(&toml_path).expect("loads"), cards);

    let json_path = dir.join("cards.json");
    let json = serde_json::json!({"card": [{
        "iccid": "8949000000000000018", "imsi": "262011234567890",
        "k": "465b5ce8b199b49faa5f0a2ee238a6bc", "opc": "cd63cb71954a9f4e48a5994e37a02baf",
        "spn": "Test"
    }]});
    std::fs::write(&json_path, json.to_string()).expect("write");
    let loaded = load(&json_path).expect("loads");
    assert_eq!(loaded[0].pin1, "1234", "defaults apply");
    assert_eq!(loaded[0].spn, "Test");

    let bad_path = dir.join("bad.toml");
    std::fs::write(
        &bad_path,
        "[[card]]\niccid = \"12x\"\nimsi = \"001\"\nk = \"00\"\nopc = \"00\"\n",
    )
    .expect("write");
    let err = load(&bad_path).expect_err("invalid").to_string();
    assert!(err.contains("bad.toml"), "{err}");
    let mut short_imsi = CardProfile::generated(1);
    short_imsi.imsi = "00101".into();
    assert!(
        short_imsi
            .validate()
            .expect_err("too short")
            .to_string()
            .contains("imsi")
    );
    std::fs::remove_dir_all(&dir).ok();
}
