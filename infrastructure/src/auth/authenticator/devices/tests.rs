//! User codes: drawn from the unambiguous alphabet, read back whatever their case and dashes.

use super::{USER_CODE_ALPHABET, new_user_code, normalize_user_code};

#[test]
fn user_codes_use_the_unambiguous_alphabet_in_two_groups() {
    for _ in 0..100 {
        let code = new_user_code();
        assert_eq!(code.len(), 9);
        assert_eq!(&code[4..5], "-");
        assert!(
            code.bytes()
                .filter(|b| *b != b'-')
                .all(|b| USER_CODE_ALPHABET.contains(&b))
        );
    }
}

#[test]
fn typed_codes_are_normalized_whatever_their_case_and_dashes() {
    assert_eq!(normalize_user_code("bcdf-ghjk"), "BCDF-GHJK");
    assert_eq!(normalize_user_code(" BCDFGHJK "), "BCDF-GHJK");
    assert_eq!(normalize_user_code("bc df gh jk"), "BCDF-GHJK");
    assert_eq!(normalize_user_code("short"), "SHORT");
}
