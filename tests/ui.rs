//! Compile-time behaviour of the attribute macros: every mistake is a compile error spanned on
//! the offending token, saying what is accepted (`tests/ui/fail/*.stderr` are reviewed
//! expectations); every option combination compiles and runs (`tests/ui/pass`).

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/fail/*.rs");
    cases.pass("tests/ui/pass/*.rs");
}
