//! The same conformance matrix against every provider kind, from both caller protocols.
#![allow(clippy::unwrap_used, clippy::expect_used)]

tollgate_tests::conformance!(openai_provider, "p-openai", scriptable);
tollgate_tests::conformance!(anthropic_provider, "p-anthropic", scriptable);
tollgate_tests::conformance!(builtin_mock_openai_style, "p-builtin-openai");
tollgate_tests::conformance!(builtin_mock_anthropic_style, "p-builtin-anthropic");
