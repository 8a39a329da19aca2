//! District outlines for the map (`[board] districts_geojson`, docs/design.md#the-map):
//! a GeoJSON FeatureCollection of Polygons and MultiPolygons, checked once at start-up
//! so a wrong file is an error naming where it is wrong, not an empty map on the wall.
//! The server reads the file (only the server reads files) and hands its text here.

use std::sync::Arc;

use serde_json::Value;

/// Checked outlines, served as they were given (`GET /api/v1/map/districts`).
#[derive(Debug, Clone, PartialEq)]
pub struct DistrictOutlines(Arc<Value>);

impl DistrictOutlines {
    /// Parses and checks `text`: JSON, a FeatureCollection, each feature's geometry a
    /// Polygon or MultiPolygon of `[lon, lat]` positions in range. The error says
    /// where (`features[2].geometry.type: …`, or the line and column of bad JSON).
    pub fn parse(text: &str) -> Result<DistrictOutlines, String> {
        let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
        if value["type"] != "FeatureCollection" {
            return Err(format!(
                "type: expected \"FeatureCollection\", got {}",
                value["type"]
            ));
        }
        let features = value["features"]
            .as_array()
            .ok_or("features: expected an array")?;
        for (i, feature) in features.iter().enumerate() {
            check_feature(feature).map_err(|e| format!("features[{i}].{e}"))?;
        }
        Ok(DistrictOutlines(Arc::new(value)))
    }

    /// A collection with no outlines: what the map gets when none is configured.
    pub fn none() -> DistrictOutlines {
        DistrictOutlines(Arc::new(
            serde_json::json!({"type": "FeatureCollection", "features": []}),
        ))
    }

    pub fn geojson(&self) -> &Value {
        &self.0
    }
}

fn check_feature(feature: &Value) -> Result<(), String> {
    if feature["type"] != "Feature" {
        return Err(format!(
            "type: expected \"Feature\", got {}",
            feature["type"]
        ));
    }
    let geometry = &feature["geometry"];
    // Polygon: rings of positions; MultiPolygon: polygons of them.
    let polygons: Vec<&Value> = match geometry["type"].as_str() {
        Some("Polygon") => vec![&geometry["coordinates"]],
        Some("MultiPolygon") => geometry["coordinates"]
            .as_array()
            .ok_or("geometry.coordinates: expected an array of polygons")?
            .iter()
            .collect(),
        _ => {
            return Err(format!(
                "geometry.type: expected \"Polygon\" or \"MultiPolygon\", got {}",
                geometry["type"]
            ));
        }
    };
    for polygon in polygons {
        let rings = polygon
            .as_array()
            .ok_or("geometry.coordinates: expected an array of rings")?;
        for ring in rings {
            let positions = ring
                .as_array()
                .ok_or("geometry.coordinates: expected a ring of positions")?;
            if let Some(bad) = positions.iter().find(|p| !is_position(p)) {
                return Err(format!(
                    "geometry.coordinates: expected [lon, lat] within ±180 and ±90, got {bad}"
                ));
            }
        }
    }
    Ok(())
}

fn is_position(p: &Value) -> bool {
    let lon = p[0].as_f64().filter(|v| (-180.0..=180.0).contains(v));
    let lat = p[1].as_f64().filter(|v| (-90.0..=90.0).contains(v));
    p.as_array().is_some_and(|a| a.len() >= 2) && lon.is_some() && lat.is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outlines_are_checked_and_the_error_says_where() {
        let square = r#"[[[116.3,39.9],[116.4,39.9],[116.4,40.0],[116.3,39.9]]]"#;
        let good = format!(
            r#"{{"type":"FeatureCollection","features":[
              {{"type":"Feature","properties":{{"name":"东城区"}},"geometry":{{"type":"Polygon","coordinates":{square}}}}},
              {{"type":"Feature","geometry":{{"type":"MultiPolygon","coordinates":[{square}]}}}}]}}"#
        );
        assert!(DistrictOutlines::parse(&good).is_ok());
        let cases = [
            (
                "{\"type\": ",
                "not JSON: EOF while parsing a value at line 1 column 9",
            ),
            (
                r#"{"type":"Feature"}"#,
                "type: expected \"FeatureCollection\", got \"Feature\"",
            ),
            (
                r#"{"type":"FeatureCollection","features":[{"type":"Feature","geometry":{"type":"Point","coordinates":[1,2]}}]}"#,
                "features[0].geometry.type: expected \"Polygon\" or \"MultiPolygon\", got \"Point\"",
            ),
            (
                r#"{"type":"FeatureCollection","features":[{"type":"Feature","geometry":{"type":"Polygon","coordinates":[[[39.9,416.3]]]}}]}"#,
                "features[0].geometry.coordinates: expected [lon, lat] within ±180 and ±90, got [39.9,416.3]",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(DistrictOutlines::parse(text), Err(expected.to_owned()));
        }
    }
}
