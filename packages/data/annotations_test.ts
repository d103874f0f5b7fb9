import assert from "node:assert/strict";
import { DataError } from "@clipq/onnx/errors";
import { loadCocoAnnotations } from "./coco.ts";
import { loadVocAnnotation } from "./voc.ts";

const coco = {
  images: [{ id: 1, file_name: "a.jpg", width: 640, height: 480 }, {
    id: 2,
    file_name: "b.jpg",
    width: 100,
    height: 50,
  }],
  categories: [{ id: 1, name: "person" }, { id: 18, name: "dog" }],
  annotations: [
    { id: 1, image_id: 1, category_id: 18, bbox: [10.5, 20, 30, 40], area: 900, iscrowd: 0 },
    { id: 2, image_id: 2, category_id: 1, bbox: [0, 0, 100, 50], iscrowd: 1 },
  ],
};

Deno.test("loadCocoAnnotations() converts boxes to corners and keeps area and crowd", () => {
  const d = loadCocoAnnotations(JSON.stringify(coco), "val.json");
  assert.deepEqual(d.images[1], { id: 2, file: "b.jpg", width: 100, height: 50 });
  assert.deepEqual(d.categories.map((c) => c.name), ["person", "dog"]);
  assert.deepEqual(d.annotations, [
    { imageId: 1, category: 18, box: [10.5, 20, 40.5, 60], area: 900, iscrowd: false },
    { imageId: 2, category: 1, box: [0, 0, 100, 50], area: 5000, iscrowd: true },
  ]);
});

Deno.test("loadCocoAnnotations() names the file and field of each problem", () => {
  const edit = (f: (c: typeof coco) => void) => {
    const c = structuredClone(coco);
    f(c);
    return c;
  };
  const bad: [unknown, RegExp][] = [
    ["{", /val\.json: expected COCO JSON, found invalid JSON/],
    [[], /val\.json: \(root\): expected an object/],
    [
      edit((c) => delete (c as Partial<typeof coco>).images),
      /val\.json: images: expected an array, found undefined/,
    ],
    [
      edit((c) => c.images[1]!.width = -1),
      /images\[1\]\.width: expected a positive number, found -1/,
    ],
    [edit((c) => c.images[1]!.id = 1), /images\[1\]\.id: expected a unique image id/],
    [
      edit((c) => (c.images[0] as { file_name: unknown }).file_name = 3),
      /images\[0\]\.file_name: expected a non-empty string, found 3/,
    ],
    [
      edit((c) => c.annotations[1]!.image_id = 9),
      /annotations\[1\]\.image_id: expected the id of an entry in images, found 9/,
    ],
    [
      edit((c) => c.annotations[0]!.category_id = 3),
      /annotations\[0\]\.category_id: expected the id of an entry in categories/,
    ],
    [
      edit((c) => c.annotations[0]!.bbox = [1, 2, 3]),
      /annotations\[0\]\.bbox: expected \[x, y, width, height\]/,
    ],
    [edit((c) => c.annotations[0]!.bbox = [1, 2, -3, 4]), /annotations\[0\]\.bbox/],
    [
      edit((c) => c.annotations[0]!.iscrowd = 2),
      /annotations\[0\]\.iscrowd: expected 0 or 1, found 2/,
    ],
  ];
  for (const [json, re] of bad) {
    assert.throws(
      () => loadCocoAnnotations(typeof json === "string" ? json : JSON.stringify(json), "val.json"),
      (e) => e instanceof DataError && re.test(e.message),
      String(re),
    );
  }
});

const vocXml = `<?xml version="1.0"?>
<!-- VOC2007 000001 -->
<annotation>
	<folder>VOC2007</folder>
	<filename>000001.jpg</filename>
	<source><database>The VOC2007 Database</database></source>
	<size><width>353</width><height>500</height><depth>3</depth></size>
	<segmented>0</segmented>
	<object>
		<name>dog</name><pose>Left</pose><truncated>1</truncated><difficult>0</difficult>
		<bndbox><xmin>48</xmin><ymin>240</ymin><xmax>195</xmax><ymax>371</ymax></bndbox>
	</object>
	<object>
		<name>person &amp; co</name>
		<pose>Left</pose>
		<truncated>1</truncated>
		<difficult>1</difficult>
		<bndbox>
			<xmin>8</xmin>
			<ymin>12</ymin>
			<xmax>352</xmax>
			<ymax>498</ymax>
		</bndbox>
	</object>
	<object><name><![CDATA[cat]]></name><bndbox><xmin>1</xmin><ymin>2</ymin><xmax>3</xmax><ymax>4</ymax></bndbox></object>
</annotation>
`;

Deno.test("loadVocAnnotation() reads file, size, objects, difficult flags and entities", () => {
  const v = loadVocAnnotation(vocXml, "000001.xml");
  assert.equal(v.file, "000001.jpg");
  assert.deepEqual([v.width, v.height], [353, 500]);
  assert.deepEqual(v.objects, [
    { name: "dog", box: [48, 240, 195, 371], difficult: false },
    { name: "person & co", box: [8, 12, 352, 498], difficult: true },
    { name: "cat", box: [1, 2, 3, 4], difficult: false },
  ]);
});

Deno.test("loadVocAnnotation() names the file, line and field of each problem", () => {
  const bad: [string, RegExp][] = [
    [
      vocXml.replace("<xmin>8</xmin>", "<xmin>eight</xmin>"),
      /000001\.xml:19: object\[1\]\.bndbox\.xmin: expected a number, found "eight"/,
    ],
    [
      vocXml.replace("</bndbox>\n\t</object>", "</bndbox>\n\t</objekt>"),
      /000001\.xml:12: expected <\/object> \(opened on line 9\), found <\/objekt>/,
    ],
    [
      vocXml.replace("<width>353</width>", ""),
      /000001\.xml:7: size: expected a <width> element, found none/,
    ],
    [
      vocXml.replace("<height>500</height>", "<height>0</height>"),
      /size\.height: expected a positive number, found "0"/,
    ],
    [
      vocXml.replace("<difficult>0</difficult>", "<difficult>yes</difficult>"),
      /object\[0\]\.difficult: expected 0 or 1/,
    ],
    [
      vocXml.replace("<xmax>195</xmax>", "<xmax>10</xmax>"),
      /object\[0\]\.bndbox: expected xmin ≤ xmax/,
    ],
    [
      vocXml.slice(0, vocXml.indexOf("<pose>Left</pose>\n")),
      /000001\.xml:14: expected <\/object> \(opened on line 13\), found the end of the file/,
    ],
    [vocXml.replace("&amp;", "&nbsp;"), /expected a predefined XML entity, found &nbsp;/],
    ["<root/>", /\(root\): expected <annotation>, found <root>/],
    ["", /expected an <annotation> element, found none/],
    ['<!DOCTYPE x [<!ENTITY a "b">]><annotation/>', /expected no DTD/],
  ];
  for (const [xml, re] of bad) {
    assert.throws(
      () => loadVocAnnotation(xml, "000001.xml"),
      (e) => e instanceof DataError && re.test(e.message),
      String(re),
    );
  }
});
