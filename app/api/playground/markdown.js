// Markdown of a model's answer, as DOM nodes built with createElement and text nodes only: no
// text the model wrote is ever parsed as HTML, so "<img onerror=…>" shows as those characters.
// Blocks: fenced code (with a copy button), headings, lists, quotes, rules, paragraphs, where a
// newline is a line break as chat answers mean it. Inline: code, bold, italic, links (http and
// https only, opened in a new tab: any other link stays its source text). What is still
// streaming (an unclosed fence) renders as far as it goes. Tables and HTML are left as text.

const FENCE = /^ {0,3}(`{3,}|~{3,})\s*([^`\s]*)/;
const HEADING = /^ {0,3}(#{1,6})\s+(.*?)(\s+#+)?\s*$/;
const ITEM = /^( *)([-*+]|\d{1,9}[.)])\s+(.*)$/;
const QUOTE = /^ {0,3}> ?(.*)$/;
const RULE = /^ {0,3}([-*_])( *\1){2,} *$/;
const INLINE = new RegExp([  // no part looks past where its closing mark would be: linear time
  /(`+)([^`]|[^`][^]*?[^`])\1(?!`)/,                              // 1 2: code
  /\*\*(?=\S)((?:(?!\*\*)[^])*?\S)\*\*|(?<!\w)__(?=\S)((?:(?!__)[^])*?\S)__(?!\w)/,  // 3 4: bold
  /\*(?=[^\s*])([^*]*?[^\s*])\*|(?<!\w)_(?=[^\s_])([^_]*?[^\s_])_(?!\w)/, // 5 6: italic
  /\[([^\]\n]+)\]\(\s*<?((?:[^\s()<>]|\([^\s()<>]*\))*)>?\s*\)/,          // 7 8: a link
  /(https?:\/\/[^\s<>()]*[^\s<>().,;:!?'"\]])/,                     // 9: a bare address
  /\\([!-\/:-@\[-`{-~])/,                                         // 10: an escaped character
].map((part) => part.source).join("|"), "g");

export function render(text) {
  const fragment = document.createDocumentFragment();
  blocks(text.replace(/\r\n?/g, "\n").split("\n"), fragment);
  return fragment;
}

export function el(name, className, text) {  // the playground's too
  const node = document.createElement(name);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function starts(line) {
  return FENCE.test(line) || HEADING.test(line) || QUOTE.test(line) || RULE.test(line)
    || ITEM.test(line);
}

function blocks(lines, into) {
  let i = 0, m;
  while (i < lines.length) {
    const line = lines[i];
    if (!line.trim()) {
      i += 1;
    } else if ((m = FENCE.exec(line))) {
      const end = new RegExp(`^ {0,3}${m[1][0]}{${m[1].length},}\\s*$`);
      const code = [];
      for (i += 1; i < lines.length && !end.test(lines[i]); i += 1) code.push(lines[i]);
      into.append(codeBlock(code.join("\n"), m[2]));
      i += 1;
    } else if ((m = HEADING.exec(line))) {  // h3 to h6: the page's own h1 and h2 come first
      into.append(inline(el(`h${Math.min(m[1].length + 2, 6)}`), m[2]));
      i += 1;
    } else if (RULE.test(line)) {
      into.append(el("hr"));
      i += 1;
    } else if (QUOTE.test(line)) {
      const quoted = [];
      for (; i < lines.length && (m = QUOTE.exec(lines[i])); i += 1) quoted.push(m[1]);
      const quote = el("blockquote");
      blocks(quoted, quote);
      into.append(quote);
    } else if (ITEM.test(line)) {
      i = list(lines, i, into);
    } else {
      const paragraph = el("p");
      for (let first = true; i < lines.length && lines[i].trim() && (first || !starts(lines[i]));
        i += 1, first = false) {
        if (!first) paragraph.append(el("br"));
        inline(paragraph, lines[i]);
      }
      into.append(paragraph);
    }
  }
}

// Items at the first item's indentation; what is indented deeper (more text, a nested list)
// belongs to the item above it.
function list(lines, i, into) {
  const [, indent, marker] = ITEM.exec(lines[i]);
  const ordered = /\d/.test(marker);
  const node = el(ordered ? "ol" : "ul");
  if (ordered && parseInt(marker, 10) !== 1) node.start = parseInt(marker, 10);
  let m;
  while (i < lines.length && (m = ITEM.exec(lines[i])) && m[1].length === indent.length
         && /\d/.test(m[2]) === ordered) {
    const body = [m[3]], inside = m[1].length + m[2].length + 1;
    for (i += 1; i < lines.length; i += 1) {
      let next = i;  // a blank line belongs to the item when what follows it does
      while (next < lines.length && !lines[next].trim()) next += 1;
      if (next === lines.length || lines[next].search(/\S/) <= indent.length) break;
      body.push(lines[i].slice(Math.min(Math.max(lines[i].search(/\S/), 0), inside)));
    }
    const item = el("li");
    blocks(body, item);
    const first = item.firstChild;
    if (first?.nodeName === "P") first.replaceWith(...first.childNodes);  // a tight list
    node.append(item);
    while (i < lines.length && !lines[i].trim() && ITEM.test(lines[i + 1] || "")) i += 1;
  }
  into.append(node);
  return i;
}

function inline(into, text) {
  let at = 0;
  for (const m of text.matchAll(INLINE)) {
    into.append(text.slice(at, m.index), span(m));
    at = m.index + m[0].length;
  }
  into.append(text.slice(at));
  return into;
}

function span(m) {
  if (m[2] !== undefined) return el("code", "", m[2].replace(/^ (.*) $/, "$1"));
  if (m[3] !== undefined || m[4] !== undefined) return inline(el("strong"), m[3] ?? m[4]);
  if (m[5] !== undefined || m[6] !== undefined) return inline(el("em"), m[5] ?? m[6]);
  if (m[7] !== undefined) return link(m[7], m[8], m[0]);
  if (m[9] !== undefined) return link(m[9], m[9], m[9]);
  return m[10];
}

function link(label, address, source) {
  let url = null;
  try {
    url = new URL(address);
  } catch {
    // a relative or broken address: text
  }
  if (!url || (url.protocol !== "http:" && url.protocol !== "https:")) return source;
  const a = el("a");
  a.href = url.href;
  a.target = "_blank";
  a.rel = "noopener noreferrer";
  a.textContent = label;  // as it is: a label that is an address would be a link in a link
  return a;
}

function codeBlock(code, language) {
  const block = el("div", "code");
  const head = el("div", "code-head");
  const copy = el("button", "copy", "Copy");
  copy.type = "button";
  head.append(el("span", "", language || "code"), copy);
  const pre = el("pre");
  pre.tabIndex = 0;  // a wide block scrolls: from the keyboard too
  pre.append(el("code", "", code));
  block.append(head, pre);
  return block;
}
