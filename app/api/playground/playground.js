// The playground: a chat over the native API (docs/api.md). Each question starts a generation
// with POST /v1/chats/generations, the whole conversation in its body and the API key, if any,
// in a header; an EventSource then follows the generation's events URL, which needs no key (it
// is unguessable) and reconnects by itself with Last-Event-ID after a cut, so that nothing is
// lost or repeated. Conversations are kept in localStorage, the key in sessionStorage. A model's
// output reaches the page only as text (markdown.js), and the page's Content-Security-Policy
// forbids any other script besides.
import { el, render } from "./markdown.js";

const $ = (id) => document.getElementById(id);
const KEPT = 50;  // conversations in localStorage, the latest ones
const STORED = { conversations: "bib.conversations", model: "bib.model", key: "bib.key" };
const QUOTAS = { default: "requests", tokens: "tokens", concurrency: "generations at once" };
const empty = $("empty");

let conversations = load();
let shown = fresh();  // the conversation on screen
let running = null;  // the answer being generated: its message, view, EventSource, generation
let frame = 0;  // the animation frame that repaints it: a token is cheap, a paint is not

// what the browser tests read: the latest answer's counters
window.bib = { tokens: 0, starts: 0, firstTokenAt: null, doneAt: null, cached: null, text: "",
  queue: [], resumed: 0 };

function status(text) {
  $("status").textContent = text;
}

function load() {
  try {
    const kept = JSON.parse(localStorage.getItem(STORED.conversations) || "[]");
    return Array.isArray(kept) ? kept : [];
  } catch {
    return [];
  }
}

function fresh() {
  const id = `c${Date.now().toString(36)}${Math.random().toString(36).slice(2, 8)}`;
  return { id, title: "", system: $("system").value, messages: [], updated: Date.now() };
}

function save() {
  if (shown.messages.length && !conversations.includes(shown)) conversations.unshift(shown);
  conversations.sort((one, other) => other.updated - one.updated).splice(KEPT);
  try {
    localStorage.setItem(STORED.conversations, JSON.stringify(conversations));
  } catch {
    status("This browser's storage is full: this conversation is not kept.");
  }
  list();
}

function list() {
  $("no-conversations").hidden = conversations.length > 0;
  $("conversations").replaceChildren(...conversations.map((conversation) => {
    const open = el("button", "open plain", conversation.title || "Untitled");
    const remove = el("button", "remove plain", "×");
    remove.setAttribute("aria-label", `Delete “${open.textContent}”`);
    for (const button of [open, remove]) {
      button.type = "button";
      button.dataset.id = conversation.id;
      button.disabled = running !== null;
    }
    if (conversation === shown) open.setAttribute("aria-current", "true");
    const item = el("li");
    item.append(open, remove);
    return item;
  }));
}

function show(conversation) {
  shown = conversation;
  $("system").value = conversation.system;
  $("messages").replaceChildren(...(conversation.messages.length ? [] : [empty]));
  conversation.messages.forEach(bubble);
  $("messages").scrollTop = $("messages").scrollHeight;
  list();
  chats(false);
}

// on a narrow screen, the conversations cover the chat until one is chosen or they are closed
function chats(open) {
  document.body.classList.toggle("show-chats", open);
  $("chats").setAttribute("aria-expanded", String(open));
  if (open) $("hide-chats").focus();
}

function bubble(message) {
  const view = { node: el("article", `message ${message.role}`) };
  if (message.role === "user") {
    view.node.append(el("div", "text", message.content));
  } else {
    view.thinking = el("details", "thinking");
    view.thought = el("div", "thought");
    view.thinking.append(el("summary", "", "Thinking"), view.thought);
    view.body = el("div", "body");
    view.tools = el("div", "tools");
    view.facts = el("p", "facts");
    view.node.append(view.thinking, view.body, view.tools, view.facts);
    paint(view, message);
  }
  $("messages").append(view.node);
  return view;
}

function paint(view, message) {
  view.thinking.hidden = !message.thinking;
  view.thought.textContent = message.thinking || "";
  view.body.replaceChildren(render(message.content));
  view.tools.replaceChildren(...(message.tool_calls || []).map(toolCall));
  const badges = facts(message.facts).map(([text, kind]) => el("span", `fact ${kind}`, text));
  view.facts.replaceChildren(...badges);
}

function toolCall(call) {
  const { name = "?", arguments: given = {} } = call.function || {};
  const node = el("div", "tool");
  const title = el("p");
  title.append("Tool call ", el("code", "", name));
  const pre = el("pre");
  pre.append(el("code", "", JSON.stringify(given, null, 2)));
  node.append(title, pre);
  return node;
}

// the badges under an answer: where it came from, how it went
function facts(known) {
  const seconds = (milliseconds) => `${(milliseconds / 1000).toFixed(2)} s`;
  const said = [];
  if (known.model) said.push([known.model, "model"]);
  if (known.position > 0) said.push([`${known.position} ahead for the GPU`, "wait"]);
  if (known.position === 0) said.push(["next for the GPU", "wait"]);
  if (known.waited) said.push([`waited ${seconds(known.waited)} for the GPU`, "wait"]);
  if (known.cache === "HIT") said.push(["cache hit", "good"]);
  if (known.cache === "JOINED") said.push(["joined the same question's generation", "good"]);
  if (known.firstToken !== undefined) said.push([`first token ${seconds(known.firstToken)}`, ""]);
  if (known.tokensPerSecond) said.push([`${known.tokensPerSecond.toFixed(1)} tokens/s`, ""]);
  if (known.resumed === 1) said.push(["resumed after a cut", "good"]);
  if (known.resumed > 1) said.push([`resumed after ${known.resumed} cuts`, "good"]);
  if (known.length) said.push(["cut at the maximum tokens", "wait"]);
  for (const [quota, left] of Object.entries(known.left || {})) {
    said.push([`${left} ${QUOTAS[quota] || quota} left`, "quota"]);
  }
  if (known.stopped) said.push(["stopped", "bad"]);
  if (known.error) said.push([known.error, "bad"]);
  return said;
}

// RateLimit: "default";r=9;t=0, "tokens";r=19000;t=0 (the IETF draft): what each quota has left
function left(header) {
  const quotas = {};
  for (const item of (header || "").split(",")) {
    const [name, ...parameters] = item.trim().split(";");
    const remaining = parameters.find((parameter) => parameter.startsWith("r="));
    if (name && remaining) quotas[name.replaceAll('"', "")] = Number(remaining.slice(2));
  }
  return quotas;
}

function headers() {
  const key = $("key").value.trim();
  return { "Content-Type": "application/json", ...(key && { Authorization: `Bearer ${key}` }) };
}

// the turns answered, each question with its answer; a turn whose answer has nothing (it failed
// before its first word) is left out, so that the model never reads a question twice
function history(conversation) {
  const turns = [];
  for (let i = 0; i + 1 < conversation.messages.length; i += 2) {
    const [question, answer] = conversation.messages.slice(i, i + 2);
    if (!answer.content && !answer.tool_calls) continue;
    const said = { role: "assistant", content: answer.content };
    if (answer.tool_calls) said.tool_calls = answer.tool_calls;
    turns.push({ role: "user", content: question.content }, said);
  }
  return turns;
}

function request(question) {
  const options = {};
  if ($("temperature").value !== "") options.temperature = Number($("temperature").value);
  if ($("num-predict").value !== "") options.num_predict = Number($("num-predict").value);
  if ($("options").value.trim()) {
    let more = null;
    try {
      more = JSON.parse($("options").value);
    } catch {
      // said below
    }
    if (!more || typeof more !== "object" || Array.isArray(more)) {
      throw new Error('More options must be a JSON object, such as {"seed": 42}.');
    }
    Object.assign(options, more);
  }
  const body = { messages: [...history(shown), { role: "user", content: question }] };
  if ($("model").value) body.model = $("model").value;
  if ($("system").value.trim()) body.system = $("system").value;
  if (Object.keys(options).length) body.options = options;
  if ($("think").checked && !$("think").disabled) body.think = true;
  return body;
}

function explain(response, problem) {
  const detail = problem.detail || response.statusText;
  if (response.status === 401) {
    return `${detail} Enter a valid API key in Settings: whoever runs this service can make one.`;
  }
  if (response.status === 403) {
    return problem.error === "model_not_allowed"
      ? `${detail} Pick another model: the list holds those you may use.`
      : `${detail} Your API key does not allow this.`;
  }
  if (response.status === 429) {
    const wait = response.headers.get("Retry-After");
    return `Rate limited: ${detail} You can ask again in ${wait} s.`;
  }
  const fields = Object.entries(problem.fields || {}).map(([name, why]) => ` ${name} ${why}.`);
  return `${problem.title || `HTTP ${response.status}`}: ${detail}${fields.join("")}`;
}

async function ask() {
  const question = $("prompt").value;
  if (running || !question.trim()) return;
  $("problem").textContent = "";
  let body;
  try {
    body = request(question);
  } catch (problem) {
    $("problem").textContent = problem.message;
    return;
  }
  shown.system = $("system").value;
  shown.title ||= question.trim().slice(0, 60);
  const answer = { role: "assistant", content: "", facts: {} };
  shown.messages.push({ role: "user", content: question }, answer);
  empty.remove();
  const asked = bubble(shown.messages.at(-2));
  const view = bubble(answer);
  view.node.setAttribute("aria-busy", "true");  // read out once whole, not at every token
  view.node.scrollIntoView({ block: "end" });
  $("prompt").value = "";
  const turn = { answer, view, asked, question, controller: new AbortController(),
    sentAt: performance.now() };
  running = turn;
  window.bib = { tokens: 0, starts: 0, firstTokenAt: null, doneAt: null, cached: null, text: "",
    queue: [], resumed: 0 };
  busy(true);
  status("Asking…");
  let response, reply;
  try {
    response = await fetch("/v1/chats/generations", { method: "POST", headers: headers(),
      body: JSON.stringify(body), signal: turn.controller.signal });
    reply = await response.json().catch(() => ({}));
  } catch {
    return withdraw(turn, turn.controller.signal.aborted ? "" : "The service did not answer.");
  }
  if (!response.ok) return withdraw(turn, explain(response, reply));
  answer.facts.left = left(response.headers.get("RateLimit"));
  answer.facts.cache = response.headers.get("X-Cache");
  follow(turn, reply);
}

// a question that never started a generation: out of the conversation, back in the box
function withdraw(turn, problem) {
  shown.messages.splice(-2);
  turn.asked.node.remove();
  turn.view.node.remove();
  if (!shown.messages.length) $("messages").append(empty);
  if (!$("prompt").value) $("prompt").value = turn.question;
  $("problem").textContent = problem;
  running = null;
  busy(false);
  status(problem ? "Not sent." : "Stopped.");
}

function follow(turn, reply) {
  const { answer } = turn, known = answer.facts, bib = window.bib;
  const source = new EventSource(reply.events);
  Object.assign(turn, { source, generation: reply.generation, events: reply.events });
  const on = (name, handle) => source.addEventListener(name, (event) => {
    if (running !== turn) return;
    handle(JSON.parse(event.data));
    schedule();
  });
  on("queued", ({ position }) => {  // waiting for a GPU slot (OLLAMA_SLOTS)
    turn.queuedAt ??= performance.now();
    known.position = position;
    bib.queue.push(position);
    status(position ? `Waiting for the GPU: ${position} ahead of you…`
                    : "Waiting for the GPU: you are next…");
  });
  on("start", (start) => {
    bib.starts += 1;
    bib.cached = start.cached;
    known.model = start.model;
    delete known.position;
    if (turn.queuedAt !== undefined) known.waited = performance.now() - turn.queuedAt;
    if (start.cached) known.cache = "HIT";
    if (start.reset) {  // the old generation is gone: this one starts over
      Object.assign(answer, { content: "", thinking: "", tool_calls: undefined });
    }
    status(start.cached ? "Replaying a cached answer…"
      : known.cache === "JOINED" ? "Following the same question, asked just before…"
      : "Generating…");
  });
  on("token", (token) => {
    const now = performance.now();
    bib.tokens += 1;
    if (bib.firstTokenAt === null) {
      bib.firstTokenAt = now;
      known.firstToken = now - turn.sentAt;
    }
    if (token.thinking) answer.thinking = (answer.thinking || "") + token.thinking;
    if (token.text) answer.content += token.text;
    if (token.tool_calls) answer.tool_calls = [...(answer.tool_calls || []), ...token.tool_calls];
    bib.text = answer.content;
    const streamed = (now - bib.firstTokenAt) / 1000;
    if (streamed > 0.25 && known.cache !== "HIT") {
      known.tokensPerSecond = (bib.tokens - 1) / streamed;
    }
  });
  on("done", (done) => {
    bib.doneAt = performance.now();
    if (done.cached) {  // replayed as fast as the page reads: the model's speed is not that
      known.cache = "HIT";
      delete known.tokensPerSecond;
    } else if (done.eval_count && done.eval_duration) {  // the engine's own measure
      known.tokensPerSecond = done.eval_count / (done.eval_duration / 1e9);
    }
    known.length = done.done_reason === "length";
    finish(turn, done.cached ? "Done (from the cache)." : `Done: ${done.eval_count} tokens.`);
  });
  source.addEventListener("error", (event) => {
    if (running !== turn) return;
    if (event.data) return failed(turn, JSON.parse(event.data));
    if (source.readyState === EventSource.CLOSED) return lost(turn);
    turn.cut = true;  // EventSource reconnects with Last-Event-ID
    status("Connection lost, resuming…");
  });
  source.addEventListener("open", () => {
    if (running !== turn || !turn.cut) return;
    turn.cut = false;
    known.resumed = (known.resumed || 0) + 1;
    bib.resumed += 1;
    status("Resumed: generating…");
    schedule();
  });
}

function failed(turn, failure) {
  if (failure.error === "shutting_down") {  // it reconnects and resumes on another worker
    turn.cut = true;
    status("The service is restarting: resuming…");
    return;
  }
  if (failure.error === "cancelled") turn.answer.facts.stopped = true;
  else turn.answer.facts.error = failure.detail;
  finish(turn, failure.error === "cancelled" ? "Stopped." : "Failed.");
}

// the EventSource gave up: its URL answered an error, not a stream (the generation failed before
// it began, or expired); that error, asked again, says why
async function lost(turn) {
  const controller = new AbortController();
  let why = "The connection was lost and could not be resumed.";
  try {
    const response = await fetch(turn.events, { signal: controller.signal });
    if (!response.ok) why = (await response.json()).detail || why;
  } catch {
    // unreachable: the sentence above
  }
  controller.abort();
  if (running !== turn) return;
  turn.answer.facts.error = why;
  finish(turn, "Failed.");
}

function finish(turn, text) {
  turn.source?.close();
  if (running !== turn) return;
  running = null;
  cancelAnimationFrame(frame);
  frame = 0;
  delete turn.answer.facts.position;
  repaint(turn);
  turn.view.node.removeAttribute("aria-busy");
  shown.updated = Date.now();
  save();
  busy(false);
  status(text);
}

function schedule() {
  frame ||= requestAnimationFrame(() => {
    frame = 0;
    if (running) repaint(running);
  });
}

// the answer as it is now, kept in sight unless the reader scrolled away from the end
function repaint(turn) {
  const scroller = $("messages");
  const following = scroller.scrollHeight - scroller.scrollTop - scroller.clientHeight < 48;
  paint(turn.view, turn.answer);
  if (following) scroller.scrollTop = scroller.scrollHeight;
}

function busy(on) {
  const stopping = document.activeElement === $("stop");
  $("send").disabled = on;
  $("stop").disabled = !on;
  $("new").disabled = on;
  for (const button of $("conversations").querySelectorAll("button")) button.disabled = on;
  if (stopping && !on) $("prompt").focus();  // not lost with the button it was on
}

async function stop() {
  const turn = running;
  if (!turn) return;
  if (!turn.generation) return turn.controller.abort();  // still asking
  status("Stopping…");
  const response = await fetch(`/v1/chats/generations/${turn.generation}`,
                               { method: "DELETE", headers: headers() }).catch(() => null);
  if (response?.status === 204) return;  // its stream says so: `cancelled`
  turn.answer.facts.stopped = true;  // over already, or the service is gone: stop following
  finish(turn, "Stopped.");
}

async function models() {
  const select = $("model");
  const chosen = localStorage.getItem(STORED.model) || select.value;
  let ids = [];
  try {
    const response = await fetch("/v1/models", { headers: headers() });
    const listed = await response.json();
    if (response.ok) {
      ids = [...new Set(listed.data.map((model) => model.id))];
    } else {
      const what = response.status === 401 ? " Enter a valid API key in Settings." : "";
      $("problem").textContent = `The models could not be listed: ${listed.error?.message}${what}`;
    }
  } catch {
    $("problem").textContent = "The models could not be listed: the service did not answer.";
  }
  select.replaceChildren(new Option("the service's default model", ""),
                         ...ids.map((id) => new Option(id, id)));
  select.value = ids.includes(chosen) ? chosen : "";
  thinks();
}

// thinking only where the model can (Ollama's capabilities); where nobody says, it may try
async function thinks() {
  const model = $("model").value;
  $("think").disabled = false;
  $("think-note").textContent = "";
  if (!model) return;
  try {
    const response = await fetch("/api/show", { method: "POST", headers: headers(),
      body: JSON.stringify({ model }) });
    const { capabilities } = await response.json();
    if (model === $("model").value && Array.isArray(capabilities)
        && !capabilities.includes("thinking")) {
      $("think").disabled = true;
      $("think-note").textContent = "(this model cannot)";
    }
  } catch {
    // no answer: leave it to the model
  }
}

$("ask").addEventListener("submit", (event) => {
  event.preventDefault();
  ask();
});
$("prompt").addEventListener("keydown", (event) => {
  if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
    event.preventDefault();
    $("ask").requestSubmit();
  }
});
document.addEventListener("keydown", (event) => {
  if (event.key !== "Escape") return;
  if (document.body.classList.contains("show-chats")) {
    chats(false);
  } else if (running) {
    event.preventDefault();
    stop();
  }
});
$("stop").addEventListener("click", stop);
$("new").addEventListener("click", () => {
  show(fresh());
  $("prompt").focus();
});
$("chats").addEventListener("click", () => chats(true));
$("hide-chats").addEventListener("click", () => {
  chats(false);
  $("chats").focus();
});
$("conversations").addEventListener("click", (event) => {
  const button = event.target.closest("button");
  const conversation = conversations.find((kept) => kept.id === button?.dataset.id);
  if (!conversation || running) return;
  if (button.classList.contains("remove")) {
    conversations = conversations.filter((kept) => kept !== conversation);
    show(conversation === shown ? fresh() : shown);
    save();
  } else {
    show(conversation);
  }
});
$("messages").addEventListener("click", async (event) => {
  const copy = event.target.closest("button.copy");
  if (!copy) return;
  const code = copy.closest(".code").querySelector("code");
  try {
    await navigator.clipboard.writeText(code.textContent);
    copy.textContent = "Copied";
  } catch {  // no clipboard outside a secure context (plain http but to localhost)
    getSelection().selectAllChildren(code);
    copy.textContent = "Selected: copy it";
  }
  setTimeout(() => { copy.textContent = "Copy"; }, 2000);
});
$("model").addEventListener("change", () => {
  localStorage.setItem(STORED.model, $("model").value);
  thinks();
});
$("key").value = sessionStorage.getItem(STORED.key) || "";
$("key").addEventListener("change", () => {
  sessionStorage.setItem(STORED.key, $("key").value.trim());
  models();
});

show(shown);
models();
