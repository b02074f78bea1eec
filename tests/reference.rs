//! `docs/REFERENCE.md` is generated from the label and template tables in the code, so it can
//! never drift: this test regenerates it and fails with a diff when the committed file differs.
//! `UPDATE_EXPECT=1 cargo test --test reference` rewrites it.

use std::path::Path;

use haproxy_marathon_sync::model::labels::{LabelKind, APP_LABELS, LABELS};
use haproxy_marathon_sync::render::reference_markdown;

fn generate() -> String {
    let mut out = String::from(
        "# Label and template reference\n\n\
         Generated from the tables in `src/model/labels.rs` and `src/render/templates.rs` by\n\
         `tests/reference.rs` (`UPDATE_EXPECT=1 cargo test --test reference`); do not edit by hand.\n\n\
         ## App labels\n\n| label | meaning |\n| --- | --- |\n",
    );
    for (name, doc) in APP_LABELS {
        out += &format!("| `{name}` | {doc} |\n");
    }
    out += "\n## Service-port labels\n\n\
            Set as `HAPROXY_{n}_<NAME>`, where `{n}` is the index of the app's service port. An\n\
            app whose label does not parse is left out with a warning naming the app and the\n\
            label; the rest of the cluster is rendered.\n\n| label | meaning |\n| --- | --- |\n";
    for label in LABELS
        .iter()
        .filter(|label| label.kind != LabelKind::Template)
    {
        out += &format!("| `HAPROXY_{{n}}_{}` | {} |\n", label.name, label.doc);
    }
    out += "\nEvery template marked \"overridable per service port\" below is also a label\n\
            `HAPROXY_{n}_<TEMPLATE>` (off with `--no-label-templates`).\n\n## Templates\n\n";
    out += &reference_markdown();
    out
}

#[test]
fn reference_doc_matches_the_tables() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/REFERENCE.md");
    let generated = generate();
    if std::env::var_os("UPDATE_EXPECT").is_some() {
        std::fs::write(&path, &generated).unwrap();
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != generated {
        let diff = similar::TextDiff::from_lines(&committed, &generated)
            .unified_diff()
            .header(
                "docs/REFERENCE.md (committed)",
                "docs/REFERENCE.md (generated)",
            )
            .to_string();
        panic!(
            "docs/REFERENCE.md is stale; run UPDATE_EXPECT=1 cargo test --test reference\n{diff}"
        );
    }
}
