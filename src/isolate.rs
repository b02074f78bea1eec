//! Finding what makes `haproxy -c` reject a candidate with a few checks (bisection, not one
//! check per suspect): the apps whose sections are at fault, so the rest of the cluster can
//! still be applied, or the operator's templates, so no app is blamed for them. The search is
//! generic over the check; here it is built from render + `apply::check`. What is done about
//! the apps found is `exclusion`'s.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Result};

use crate::config::{ApplyConfig, Config};
use crate::{apply, exclusion, model, render};

/// Finds a set of apps whose exclusion makes `accepts` true, given that `accepts` is false for
/// the whole of `apps` and true for none of them (checked by the caller). Each call of
/// `accepts(excluded)` says whether the candidate without `excluded` passes validation.
///
/// Adaptive group testing: a half that passes together with everything already known good is
/// good; a half that fails holds a culprit and is split again. Costs about
/// `culprits × log2(apps)` checks. An app is only blamed when a configuration differing from an
/// accepted one by that app alone is rejected.
pub fn find_culprits(
    apps: &[String],
    mut accepts: impl FnMut(&BTreeSet<String>) -> Result<bool>,
) -> Result<BTreeSet<String>> {
    let all: BTreeSet<String> = apps.iter().cloned().collect();
    let mut culprits = BTreeSet::new();
    let mut good: BTreeSet<String> = BTreeSet::new();
    search(&all, apps, &mut good, &mut culprits, &mut accepts)?;
    Ok(culprits)
}

/// `suspects` are known to make `good ∪ suspects` fail; moves each suspect to `good` or
/// `culprits`.
fn search(
    all: &BTreeSet<String>,
    suspects: &[String],
    good: &mut BTreeSet<String>,
    culprits: &mut BTreeSet<String>,
    accepts: &mut impl FnMut(&BTreeSet<String>) -> Result<bool>,
) -> Result<()> {
    if let [single] = suspects {
        culprits.insert(single.clone());
        return Ok(());
    }
    let (left, right) = suspects.split_at(suspects.len() / 2);
    let with_left: BTreeSet<String> = good.iter().chain(left).cloned().collect();
    if accepts(&excluded(all, &with_left))? {
        good.extend(left.iter().cloned());
    } else {
        search(all, left, good, culprits, accepts)?;
    }
    let with_right: BTreeSet<String> = good.iter().chain(right).cloned().collect();
    if accepts(&excluded(all, &with_right))? {
        good.extend(right.iter().cloned());
    } else {
        search(all, right, good, culprits, accepts)?;
    }
    Ok(())
}

/// Everything in `all` that is not `included`.
fn excluded(all: &BTreeSet<String>, included: &BTreeSet<String>) -> BTreeSet<String> {
    all.difference(included).cloned().collect()
}

// The search applied to a cluster: render without some apps, ask `apply::check`.

/// The apps whose sections make `haproxy -c` reject the candidate, each with HAProxy's alerts
/// for it. Fails (keeping the original error) when even the cluster without any app is
/// rejected: then the head or a template is at fault, not an app.
pub(crate) fn find_rejected_apps(
    model: &model::Model,
    templates: &render::Templates,
    config: &Config,
    apply_config: &ApplyConfig,
) -> Result<BTreeMap<String, String>> {
    let apps: Vec<String> = model
        .services
        .iter()
        .map(|service| service.app_id.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let verdict = |excluded: &BTreeSet<String>| -> Result<apply::Verdict> {
        let rendered = render::render(
            &without_apps(model, excluded.iter()),
            templates,
            &config.render,
        )?;
        let (candidate, _) = exclusion::candidate(rendered, config);
        apply::check(&candidate, apply_config)
    };
    let everything: BTreeSet<String> = apps.iter().cloned().collect();
    if verdict(&everything)? != apply::Verdict::Accepted {
        bail!(
            "HAProxy rejects the configuration even without any app: {}",
            config.blame_without_apps()
        );
    }
    let culprits = find_culprits(&apps, |excluded| {
        Ok(verdict(excluded)? == apply::Verdict::Accepted)
    })?;
    if culprits.len() == apps.len() {
        bail!(
            "HAProxy rejects every app's sections: a template they share is at fault, not an app"
        );
    }
    // HAProxy's words for each culprit: the others left out, this one alone added back.
    let mut excluded = BTreeMap::new();
    for app in &culprits {
        let others: BTreeSet<String> = culprits.iter().filter(|c| *c != app).cloned().collect();
        let alerts = match verdict(&others)? {
            apply::Verdict::Rejected { alerts } => alerts.replace('\n', " / "),
            apply::Verdict::Accepted => "rejected only together with the others".to_string(),
        };
        excluded.insert(app.clone(), alerts);
    }
    Ok(excluded)
}

/// The operator's sections (`--templates` files, `HAPROXY_*` variables) that make HAProxy
/// reject `model`'s candidate: `Some` when it passes with the built-in
/// defaults in their place, narrowed to the sections at fault; `None` when the defaults do not
/// help (the fault is an app's, or the built-in head does not suit this host). A render that
/// fails with the defaults counts as a rejection.
pub(crate) fn find_rejected_templates(
    model: &model::Model,
    templates: &render::Templates,
    config: &Config,
    apply_config: &ApplyConfig,
) -> Result<Option<Vec<String>>> {
    let operator = templates.operator_sections();
    if operator.is_empty() {
        return Ok(None);
    }
    let accepted_with_defaults_for = |defaults_for: &BTreeSet<String>| -> Result<bool> {
        let replaced = templates.with_defaults_for(&config.render, defaults_for)?;
        let Ok(rendered) = render::render(model, &replaced, &config.render) else {
            return Ok(false);
        };
        let (candidate, _) = exclusion::candidate(rendered, config);
        Ok(apply::check(&candidate, apply_config)? == apply::Verdict::Accepted)
    };
    if accepted_with_defaults_for(&BTreeSet::new())? {
        return Ok(None); // not rejected at all: nothing to blame
    }
    let all: BTreeSet<String> = operator.iter().cloned().collect();
    if accepted_with_defaults_for(&all)? {
        let culprits = find_culprits(&operator, &accepted_with_defaults_for)?;
        return Ok(Some(culprits.into_iter().collect()));
    }
    // The built-in head may not suit this host: one section at a time, the rest kept.
    for section in &operator {
        if accepted_with_defaults_for(&BTreeSet::from([section.clone()]))? {
            return Ok(Some(vec![section.clone()]));
        }
    }
    Ok(None)
}

/// The model without the services of `apps`.
pub(crate) fn without_apps<'a>(
    model: &model::Model,
    apps: impl Iterator<Item = &'a String>,
) -> model::Model {
    let apps: BTreeSet<&String> = apps.collect();
    model::Model {
        services: model
            .services
            .iter()
            .filter(|service| !apps.contains(&service.app_id))
            .cloned()
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (0..n).map(|i| format!("/app{i:03}")).collect()
    }

    /// A check that fails while any of `bad` is included, counting its calls.
    fn run(n: usize, bad: &[&str]) -> (BTreeSet<String>, usize) {
        let apps = names(n);
        let bad: BTreeSet<String> = bad.iter().map(|s| s.to_string()).collect();
        let mut checks = 0;
        let culprits = find_culprits(&apps, |excluded| {
            checks += 1;
            Ok(bad.iter().all(|app| excluded.contains(app)))
        })
        .unwrap();
        (culprits, checks)
    }

    #[test]
    fn one_bad_app_among_many_takes_a_logarithmic_number_of_checks() {
        let (culprits, checks) = run(1000, &["/app617"]);
        assert_eq!(culprits, BTreeSet::from(["/app617".to_string()]));
        assert!(checks <= 2 * 10 + 2, "{checks} checks for 1000 apps");
    }

    #[test]
    fn several_bad_apps_are_all_found_and_only_they() {
        let bad = ["/app000", "/app013", "/app014", "/app099"];
        let (culprits, checks) = run(100, &bad);
        assert_eq!(culprits, bad.iter().map(|s| s.to_string()).collect());
        assert!(
            checks < 100,
            "{checks} checks is no better than one per app"
        );
    }

    #[test]
    fn a_conflict_between_two_apps_blames_the_later_one_only() {
        // Two apps that are fine alone but clash together (say, the same bind port).
        let apps = names(8);
        let culprits = find_culprits(&apps, |excluded| {
            Ok(excluded.contains("/app002") || excluded.contains("/app005"))
        })
        .unwrap();
        assert_eq!(culprits, BTreeSet::from(["/app005".to_string()]));
    }

    #[test]
    fn a_failing_check_is_passed_on() {
        let apps = names(4);
        let result = find_culprits(&apps, |_| anyhow::bail!("haproxy is gone"));
        assert!(result.is_err());
    }
}
