//! The activation table (docs/design.md#activation-table): plans per shelter or per
//! dual-use type, which plan a shelter gets, and each mistake located.

use std::time::Duration;

use reserve::registry::{PlanFor, Registry, Source, load_registry};

const BASE: &str = r#"
[[category]]
id = "water"
name = "Drinking water"
unit = "L"
daily_need = 3.0

[[town]]
id = "jingshan"
name = "景山街道"
district = "dongcheng"
cluster = "c01"
population = 1000

[[facility]]
id = "js-wh1"
town = "jingshan"
kind = "warehouse"

[[facility]]
id = "js-school"
town = "jingshan"
kind = "shelter"
capacity = 500
dual_use = "school"

[[facility]]
id = "js-school2"
town = "jingshan"
kind = "shelter"
capacity = 200
dual_use = "school"

[[facility]]
id = "js-gym"
town = "jingshan"
kind = "shelter"
capacity = 300
dual_use = "gym"

[[contact]]
name = "王芳"
email = "fang.wang@example.org"
towns = ["jingshan"]

[[contact]]
name = "李强"
email = "qiang.li@example.org"
towns = ["jingshan"]

[[contact]]
name = "李强"
email = "qiang.li2@example.org"
towns = ["jingshan"]
"#;

const PLANS: &str = r#"
[[activation_plan]]
dual_use = "school"
[[activation_plan.step]]
name = "通知运营方 Notify the operator"
contact = "王芳"
within = "30m"
[[activation_plan.step]]
name = "清空场馆 Clear the hall"
contact = "qiang.li2@example.org"
within = "2h"

[[activation_plan]]
shelters = ["js-school2"]
[[activation_plan.step]]
name = "开门 Open the doors"
contact = "fang.wang@example.org"
within = "1h"
"#;

fn load(text: &str) -> Result<Registry, Vec<String>> {
    let source = Source {
        name: "registry.toml".into(),
        text: text.into(),
    };
    load_registry(&source, &[], &mut |_| Err("no csv".into()))
        .map_err(|e| e.0.iter().map(ToString::to_string).collect())
}

fn with_plans(plans: &str) -> Result<Registry, Vec<String>> {
    load(&format!("{BASE}{plans}"))
}

/// The line of `needle`'s first occurrence in the registry text.
fn line_of(plans: &str, needle: &str) -> usize {
    let text = format!("{BASE}{plans}");
    let at = text.find(needle).expect("needle in text");
    text[..at].matches('\n').count() + 1
}

#[test]
fn a_shelter_gets_the_plan_naming_it_else_its_types_else_none() {
    let r = with_plans(PLANS).unwrap_or_else(|e| panic!("{e:?}"));
    let plan = |id: &str| r.activation_plan(r.facility_idx(id).unwrap());
    let school = plan("js-school").expect("the school type's plan");
    assert_eq!(
        school.applies_to,
        PlanFor::DualUse(reserve::registry::DualUse::School)
    );
    let names: Vec<&str> = school.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        names,
        ["通知运营方 Notify the operator", "清空场馆 Clear the hall"]
    );
    assert_eq!(school.steps[0].within, Duration::from_secs(1800));
    assert_eq!(
        Some(school.steps[0].contact.as_str()),
        Some("fang.wang@example.org")
    );
    // Named by email, the second 李强.
    assert_eq!(
        Some(school.steps[1].contact.as_str()),
        Some("qiang.li2@example.org")
    );
    let own = plan("js-school2").expect("its own plan");
    assert_eq!(own.steps.len(), 1);
    assert_eq!(own.steps[0].name, "开门 Open the doors");
    assert!(plan("js-gym").is_none(), "no gym plan");
    assert!(plan("js-wh1").is_none(), "not a shelter");
}

#[test]
fn each_mistake_in_a_plan_is_located() {
    let cases: &[(&str, &str, &str)] = &[
        (
            "[[activation_plan]]\ndual_use = \"school\"\n[[activation_plan.step]]\nname = \"a\"\ncontact = \"wang\"\nwithin = \"1h\"\n",
            "contact = \"wang\"",
            "activation_plan.step[1]: contact: unknown contact \"wang\"",
        ),
        (
            "[[activation_plan]]\ndual_use = \"school\"\n[[activation_plan.step]]\nname = \"a\"\ncontact = \"李强\"\nwithin = \"1h\"\n",
            "contact = \"李强\"",
            "contact: \"李强\" names 2 contacts",
        ),
        (
            "[[activation_plan]]\nshelters = [\"js-pool\"]\n[[activation_plan.step]]\nname = \"a\"\ncontact = \"王芳\"\nwithin = \"1h\"\n",
            "shelters = ",
            "activation_plan: shelters: unknown shelter \"js-pool\"",
        ),
        (
            "[[activation_plan]]\nshelters = [\"js-wh1\"]\n[[activation_plan.step]]\nname = \"a\"\ncontact = \"王芳\"\nwithin = \"1h\"\n",
            "shelters = ",
            "\"js-wh1\" is a warehouse, not a shelter",
        ),
        (
            "[[activation_plan]]\ndual_use = \"school\"\n[[activation_plan.step]]\nname = \"a\"\ncontact = \"王芳\"\nwithin = \"soon\"\n",
            "within = \"soon\"",
            "activation_plan.step[1]: within: duration \"soon\"",
        ),
        (
            "[[activation_plan]]\ndual_use = \"school\"\n[[activation_plan.step]]\nname = \"a\"\ncontact = \"王芳\"\nwithin = \"0s\"\n",
            "within = \"0s\"",
            "within: must be more than 0",
        ),
        (
            "[[activation_plan]]\ndual_use = \"school\"\n[[activation_plan.step]]\nname = \"  \"\ncontact = \"王芳\"\nwithin = \"1h\"\n",
            "name = \"  \"",
            "activation_plan.step[1]: name: must not be empty",
        ),
        (
            "[[activation_plan]]\ndual_use = \"castle\"\n[[activation_plan.step]]\nname = \"a\"\ncontact = \"王芳\"\nwithin = \"1h\"\n",
            "dual_use = \"castle\"",
            "dual_use: unknown \"castle\"",
        ),
        (
            "[[activation_plan]]\ndual_use = \"gym\"\n",
            "[[activation_plan]]",
            "needs at least one step",
        ),
        (
            "[[activation_plan]]\n[[activation_plan.step]]\nname = \"a\"\ncontact = \"王芳\"\nwithin = \"1h\"\n",
            "[[activation_plan]]",
            "give either dual_use or shelters",
        ),
    ];
    for (plans, at, expected) in cases {
        let errors = with_plans(plans).expect_err(plans);
        let line = line_of(plans, at);
        assert!(
            errors
                .iter()
                .any(|e| e.starts_with(&format!("registry.toml:{line}: ")) && e.contains(expected)),
            "{plans}\nexpected line {line}: {expected}\ngot {errors:#?}"
        );
    }
}

#[test]
fn a_second_plan_for_a_shelter_or_a_type_names_the_first() {
    let twice = format!(
        "{PLANS}\n[[activation_plan]]\nshelters = [\"js-gym\", \"js-school2\"]\n[[activation_plan.step]]\nname = \"a\"\ncontact = \"王芳\"\nwithin = \"1h\"\n\
         [[activation_plan]]\ndual_use = \"school\"\n[[activation_plan.step]]\nname = \"b\"\ncontact = \"王芳\"\nwithin = \"1h\"\n"
    );
    let errors = with_plans(&twice).expect_err("duplicates");
    let first_shelter = line_of(PLANS, "shelters = [\"js-school2\"]");
    let first_school = line_of(PLANS, "dual_use = \"school\"\n[[activation_plan.step]]");
    assert!(
        errors.iter().any(|e| e.contains(&format!(
            "activation_plan: shelter \"js-school2\" already has a plan (at registry.toml:{first_shelter})"
        ))),
        "{errors:#?}"
    );
    assert!(
        errors.iter().any(|e| e.contains(&format!(
            "activation_plan: dual_use school already has a plan (at registry.toml:{first_school})"
        ))),
        "{errors:#?}"
    );
    assert!(
        !errors.iter().any(|e| e.contains("js-gym")),
        "the gym had no plan yet: {errors:#?}"
    );
}

/// A shard (or a cluster instance's scope) keeps the plans of its shelters: named
/// ones remapped to the shelters it keeps, types' as they are.
#[test]
fn a_registry_narrowed_to_some_towns_keeps_their_plans() {
    let more = format!(
        "{PLANS}\n[[town]]\nid = \"donghua\"\nname = \"东华门街道\"\ndistrict = \"dongcheng\"\ncluster = \"c01\"\npopulation = 1000\n\
         \n[[facility]]\nid = \"dh-gym\"\ntown = \"donghua\"\nkind = \"shelter\"\ncapacity = 100\ndual_use = \"gym\"\n\
         \n[[activation_plan]]\nshelters = [\"dh-gym\", \"js-gym\"]\n[[activation_plan.step]]\nname = \"a\"\ncontact = \"王芳\"\nwithin = \"1h\"\n"
    );
    let whole = with_plans(&more).unwrap_or_else(|e| panic!("{e:?}"));
    let jingshan = whole.only_towns(|t| t.as_str() == "jingshan");
    let plan = |r: &Registry, id: &str| r.activation_plan(r.facility_idx(id).unwrap()).cloned();
    let gym = plan(&jingshan, "js-gym").expect("the gym keeps its plan");
    assert_eq!(gym.steps[0].contact, "fang.wang@example.org");
    assert_eq!(
        gym.applies_to,
        PlanFor::Shelters(vec![jingshan.facility_idx("js-gym").unwrap()])
    );
    assert_eq!(plan(&jingshan, "js-school").unwrap().steps.len(), 2);
    assert_eq!(plan(&jingshan, "js-school2").unwrap().steps.len(), 1);
    let donghua = whole.only_towns(|t| t.as_str() == "donghua");
    assert_eq!(plan(&donghua, "dh-gym").unwrap().steps[0].name, "a");
    assert_eq!(
        donghua.activation_plans().len(),
        2,
        "the school type's and the gyms'"
    );
}
