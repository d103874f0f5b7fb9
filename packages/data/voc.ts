/**
 * Pascal VOC annotation XML (`Annotations/*.xml`). VOC's files are simple element trees, so a
 * small strict XML reader handles them: elements, text, attributes (ignored), comments,
 * processing instructions, CDATA and the predefined and numeric entities; no DTDs.
 *
 * Boxes are returned as written (`xmin ymin xmax ymax`, VOC's 1-based pixel indices, inclusive);
 * the VOC devkit evaluates them that way too.
 *
 * @module
 */
import { DataError } from "@clipq/onnx/errors";

/** One annotated object. */
export interface VocObject {
  /** Class name (`<name>`). */
  readonly name: string;
  /** `[xmin, ymin, xmax, ymax]` as written in `<bndbox>`. */
  readonly box: readonly [number, number, number, number];
  /** `<difficult>1</difficult>`: ignored by VOC evaluation. */
  readonly difficult: boolean;
}

/** One VOC annotation file. */
export interface VocAnnotation {
  /** `<filename>`. */
  readonly file: string;
  /** `<size><width>`. */
  readonly width: number;
  /** `<size><height>`. */
  readonly height: number;
  readonly objects: VocObject[];
}

interface XmlElement {
  readonly tag: string;
  readonly children: XmlElement[];
  text: string;
  readonly line: number;
}

const ENTITIES: Record<string, string> = { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'" };

function parseXml(text: string, name: string): XmlElement {
  let i = 0;
  let line = 1;
  const fail = (detail: string): never => {
    throw new DataError(`${name}:${line}: ${detail}`);
  };
  const advance = (to: number) => {
    for (let k = i; k < to; k++) if (text.charCodeAt(k) === 10) line++;
    i = to;
  };
  const decode = (s: string): string =>
    s.replace(/&(#x[0-9a-fA-F]+|#[0-9]+|[a-zA-Z]+);/g, (m, e: string) => {
      if (e[0] === "#") {
        const cp = e[1] === "x" ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10);
        return cp <= 0x10ffff
          ? String.fromCodePoint(cp)
          : fail(`expected a valid character reference, found ${m}`);
      }
      return ENTITIES[e] ?? fail(`expected a predefined XML entity, found ${m}`);
    });
  const stack: XmlElement[] = [];
  let root: XmlElement | undefined;
  while (i < text.length) {
    const lt = text.indexOf("<", i);
    if (lt < 0) {
      if (text.slice(i).trim()) fail("expected only whitespace after the root element, found text");
      break;
    }
    const chunk = text.slice(i, lt);
    if (stack.length) stack[stack.length - 1]!.text += decode(chunk);
    else if (chunk.trim()) {
      fail(`expected an element, found text ${JSON.stringify(chunk.trim().slice(0, 20))}`);
    }
    advance(lt);
    if (text.startsWith("<!--", i)) {
      const end = text.indexOf("-->", i);
      if (end < 0) fail("expected --> closing a comment, found the end of the file");
      advance(end + 3);
    } else if (text.startsWith("<?", i)) {
      const end = text.indexOf("?>", i);
      if (end < 0) fail("expected ?> closing a processing instruction, found the end of the file");
      advance(end + 2);
    } else if (text.startsWith("<![CDATA[", i)) {
      const end = text.indexOf("]]>", i);
      if (end < 0) fail("expected ]]> closing CDATA, found the end of the file");
      if (!stack.length) fail("expected CDATA inside an element, found it outside");
      stack[stack.length - 1]!.text += text.slice(i + 9, end);
      advance(end + 3);
    } else if (text.startsWith("<!", i)) {
      fail("expected no DTD or declarations in a VOC annotation, found <!");
    } else if (text.startsWith("</", i)) {
      const end = text.indexOf(">", i);
      if (end < 0) fail("expected > closing an end tag, found the end of the file");
      const tag = text.slice(i + 2, end).trim();
      const open = stack.pop();
      if (!open) fail(`expected no end tag after the root element, found </${tag}>`);
      if (open!.tag !== tag) {
        fail(`expected </${open!.tag}> (opened on line ${open!.line}), found </${tag}>`);
      }
      advance(end + 1);
    } else {
      const m = /^<([A-Za-z_][\w.:-]*)((?:\s+[\w.:-]+\s*=\s*(?:"[^"]*"|'[^']*'))*)\s*(\/?)>/.exec(
        text.slice(i, i + 4096),
      );
      if (!m) fail(`expected a start tag, found ${JSON.stringify(text.slice(i, i + 20))}`);
      const el: XmlElement = { tag: m![1]!, children: [], text: "", line };
      if (stack.length) stack[stack.length - 1]!.children.push(el);
      else if (root) fail(`expected a single root element, found a second <${el.tag}>`);
      else root = el;
      if (!m![3]) stack.push(el);
      advance(i + m![0].length);
    }
  }
  if (stack.length) {
    const open = stack[stack.length - 1]!;
    fail(`expected </${open.tag}> (opened on line ${open.line}), found the end of the file`);
  }
  if (!root) fail("expected an <annotation> element, found none");
  return root!;
}

/**
 * Parses and validates a Pascal VOC annotation file.
 *
 * @param xmlText The file's text.
 * @param name The file name, for error messages.
 * @returns File name, image size and objects.
 * @throws {DataError} Naming the file, line and field (`000001.xml:12: object[0].bndbox.xmin: …`).
 *
 * @example Usage
 * ```ts
 * import { loadVocAnnotation } from "@clipq/data/voc";
 * import assert from "node:assert/strict";
 * const voc = loadVocAnnotation(`<annotation><filename>1.jpg</filename>
 *   <size><width>353</width><height>500</height><depth>3</depth></size>
 *   <object><name>dog</name><difficult>0</difficult>
 *   <bndbox><xmin>48</xmin><ymin>240</ymin><xmax>195</xmax><ymax>371</ymax></bndbox></object>
 *   </annotation>`, "000001.xml");
 * assert.deepEqual(voc.objects[0], { name: "dog", box: [48, 240, 195, 371], difficult: false });
 * ```
 */
export function loadVocAnnotation(xmlText: string, name: string): VocAnnotation {
  const root = parseXml(xmlText, name);
  const fail = (el: XmlElement, path: string, detail: string): never => {
    throw new DataError(`${name}:${el.line}: ${path}: ${detail}`);
  };
  if (root.tag !== "annotation") fail(root, "(root)", `expected <annotation>, found <${root.tag}>`);
  const child = (el: XmlElement, tag: string, path: string): XmlElement =>
    el.children.find((c) => c.tag === tag) ??
      fail(el, path, `expected a <${tag}> element, found none`);
  const number = (el: XmlElement, tag: string, path: string, pred: (n: number) => boolean) => {
    const c = child(el, tag, path);
    const t = c.text.trim();
    const n = Number(t);
    return t && Number.isFinite(n) && pred(n) ? n : fail(
      c,
      `${path}.${tag}`,
      `expected a ${pred === positive ? "positive " : ""}number, found ${JSON.stringify(t)}`,
    );
  };
  const positive = (n: number) => n > 0;
  const any = () => true;
  const file = child(root, "filename", "annotation").text.trim();
  if (!file) fail(root, "filename", "expected a file name, found an empty <filename>");
  const size = child(root, "size", "annotation");
  const width = number(size, "width", "size", positive);
  const height = number(size, "height", "size", positive);
  const objects: VocObject[] = [];
  root.children.filter((c) => c.tag === "object").forEach((o, k) => {
    const p = `object[${k}]`;
    const cls = child(o, "name", p).text.trim();
    if (!cls) fail(o, `${p}.name`, "expected a class name, found an empty <name>");
    const bb = child(o, "bndbox", p);
    const bp = `${p}.bndbox`;
    const box = [
      number(bb, "xmin", bp, any),
      number(bb, "ymin", bp, any),
      number(bb, "xmax", bp, any),
      number(bb, "ymax", bp, any),
    ] as const;
    if (box[2] < box[0] || box[3] < box[1]) {
      fail(bb, bp, `expected xmin ≤ xmax and ymin ≤ ymax, found [${box.join(", ")}]`);
    }
    const d = o.children.find((c) => c.tag === "difficult")?.text.trim() ?? "0";
    if (d !== "0" && d !== "1") {
      fail(o, `${p}.difficult`, `expected 0 or 1, found ${JSON.stringify(d)}`);
    }
    objects.push({ name: cls, box, difficult: d === "1" });
  });
  return { file, width, height, objects };
}
