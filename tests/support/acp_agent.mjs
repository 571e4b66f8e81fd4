// A real ACP agent for the bridge tests, built on the official TypeScript SDK
// (@agentclientprotocol/sdk, installed by scripts/install-test-tools into .tools/node).
// The SDK parses every request the bridge sends against the protocol's schema, so a
// malformed request fails the test with a JSON-RPC error.
//
// It remembers the prompts of each session (in $ACP_AGENT_DIR/sessions/, so that a
// restarted process can session/load them and replays them when it does), and
// appends what happens to $ACP_AGENT_DIR/events.jsonl for the tests to wait on.
// Words in a prompt make it misbehave on command:
//   HANG       never answers until session/cancel
//   DIEONCE    the first time: records its pid and hangs (the test kill -9s it)
//   CRASHONCE  the first time: writes half a reply and exits mid-turn
//   PERMISSION asks permission for a tool call and reports the outcome (with RUNCMD:
//              for a shell command, its raw input the command)
//   FLOOD      sends 5000 chunks of 100 characters
//   GARBAGE    prints lines that are not JSON-RPC, then answers
//   SILENT     ends the turn without any text (end_turn; OpenClaw when its model fails)
//   INTERRUPTED ends the turn as cancelled, unasked, with OpenClaw's interruption notice
//   REFUSE     ends the turn with stopReason refusal (and some text)
//   MAXTOKENS  ends the turn with stopReason max_tokens after half a reply
//   NOREADONCE the first time: stops reading its stdin and floods the client with
//              requests (fs/read_text_file, at most 600,000) as fast as its stdout
//              takes them
//   PICTURE    reports the image blocks it got
//   DRAW       answers with an image block (a PNG), a resource block (a PDF, inline
//              blob) and text, in that order of chunks
// Environment: ACP_NO_LOAD=1 hides loadSession; ACP_FIXED_SESSION=ID answers every
// session/new with that one id (a hostile agent); ACP_AGENT_DIR is required.

import * as fs from "node:fs";
import * as path from "node:path";
import { createRequire } from "node:module";
import { Writable } from "node:stream";
import { fileURLToPath, pathToFileURL } from "node:url";

// The SDK lives in the repository's .tools/node (not next to this file).
const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
const require = createRequire(path.join(root, ".tools", "node", "package.json"));
const acp = await import(pathToFileURL(require.resolve("@agentclientprotocol/sdk")).href);

const dir = process.env.ACP_AGENT_DIR;
if (!dir) {
  console.error("acp_agent.mjs: set ACP_AGENT_DIR");
  process.exit(2);
}
fs.mkdirSync(path.join(dir, "sessions"), { recursive: true });
const canLoad = process.env.ACP_NO_LOAD !== "1";
const fixedSession = process.env.ACP_FIXED_SESSION || "";

function event(ev) {
  fs.appendFileSync(
    path.join(dir, "events.jsonl"),
    JSON.stringify({ ...ev, pid: process.pid }) + "\n",
  );
}

function sessionFile(id) {
  return path.join(dir, "sessions", id.replace(/[^A-Za-z0-9_-]/g, "_") + ".json");
}

function readSession(id) {
  try {
    return JSON.parse(fs.readFileSync(sessionFile(id), "utf8"));
  } catch {
    return null;
  }
}

function writeSession(id, s) {
  fs.writeFileSync(sessionFile(id), JSON.stringify(s));
}

function once(marker) {
  const p = path.join(dir, marker);
  if (fs.existsSync(p)) return false;
  fs.writeFileSync(p, "");
  return true;
}

const cancels = new Map(); // sessionId -> resolve()

function cancelled(sessionId) {
  return new Promise((resolve) => cancels.set(sessionId, resolve));
}

event({ ev: "start" });

const app = acp
  .agent({ name: "smsgate-test-agent" })
  .onRequest("initialize", ({ params }) => {
    event({ ev: "initialize", params });
    return {
      protocolVersion: acp.PROTOCOL_VERSION,
      agentCapabilities: {
        loadSession: canLoad,
        promptCapabilities: { image: true, audio: false, embeddedContext: false },
      },
      authMethods: [],
    };
  })
  .onRequest("session/new", ({ params }) => {
    const id = fixedSession || "sess-" + Math.random().toString(36).slice(2, 10);
    // A fixed id keeps its history: a second conversation would see the first's.
    if (!readSession(id)) writeSession(id, { cwd: params.cwd, turns: [] });
    event({ ev: "new", sessionId: id, cwd: params.cwd, mcpServers: params.mcpServers });
    return { sessionId: id };
  })
  .onRequest("session/load", async ({ params, client }) => {
    const s = readSession(params.sessionId);
    event({ ev: "load", sessionId: params.sessionId, found: !!s });
    if (!s) throw acp.RequestError.resourceNotFound(params.sessionId);
    for (const t of s.turns) {
      await client.notify("session/update", {
        sessionId: params.sessionId,
        update: { sessionUpdate: "user_message_chunk", content: { type: "text", text: t.prompt } },
      });
      await client.notify("session/update", {
        sessionId: params.sessionId,
        update: { sessionUpdate: "agent_message_chunk", content: { type: "text", text: t.reply } },
      });
    }
    return {};
  })
  .onNotification("session/cancel", ({ params }) => {
    event({ ev: "cancel", sessionId: params.sessionId });
    const resolve = cancels.get(params.sessionId);
    if (resolve) resolve();
  })
  .onRequest("session/prompt", async ({ params, client }) => {
    const sessionId = params.sessionId;
    const s = readSession(sessionId);
    if (!s) throw acp.RequestError.resourceNotFound(sessionId);
    const text = params.prompt
      .filter((b) => b.type === "text")
      .map((b) => b.text)
      .join("\n");
    const images = params.prompt.filter((b) => b.type === "image");
    event({ ev: "prompt", sessionId, text, images: images.length });
    const say = (t) =>
      client.notify("session/update", {
        sessionId,
        update: { sessionUpdate: "agent_message_chunk", content: { type: "text", text: t } },
      });

    if (text.includes("HANG")) {
      await cancelled(sessionId);
      return { stopReason: "cancelled" };
    }
    if (text.includes("DIEONCE") && once("dieonce")) {
      event({ ev: "hanging" });
      await new Promise(() => {});
    }
    if (text.includes("CRASHONCE") && once("crashonce")) {
      await say("half a repl");
      event({ ev: "crashing" });
      process.exit(3);
    }
    if (text.includes("INTERRUPTED")) {
      await say("[OpenClaw interruption] The gateway restarted while this run was in progress.");
      return { stopReason: "cancelled" };
    }
    if (text.includes("REFUSE")) {
      await say("I can't help with that.");
      return { stopReason: "refusal" };
    }
    if (text.includes("MAXTOKENS")) {
      await say("The answer is a long one, and it goes on and");
      return { stopReason: "max_tokens" };
    }
    if (text.includes("NOREADONCE") && once("noreadonce")) {
      deaf = true;
      event({ ev: "deaf" });
      await flood(sessionId);
      await new Promise(() => {});
    }
    if (text.includes("BADCHUNK")) {
      // A message chunk the v1 schema cannot read (a content type that does not
      // exist), between two good ones: its text would be missing from the reply.
      await say("part one, ");
      process.stdout.write(
        JSON.stringify({
          jsonrpc: "2.0",
          method: "session/update",
          params: {
            sessionId,
            update: { sessionUpdate: "agent_message_chunk", content: { type: "txt", text: "the middle, " } },
          },
        }) + "\n",
      );
      await say("part three");
      return { stopReason: "end_turn" };
    }
    if (text.includes("SILENT")) {
      await client.notify("session/update", {
        sessionId,
        update: { sessionUpdate: "agent_thought_chunk", content: { type: "text", text: "thinking" } },
      });
      return { stopReason: "end_turn" };
    }
    if (text.includes("DRAW")) {
      const png = Buffer.concat([
        Buffer.from("89504e470d0a1a0a0000000d49484452", "hex"),
        Buffer.from(Array.from({ length: 2000 }, (_, i) => (i * 13) % 256)),
      ]);
      const pdf = Buffer.from("%PDF-1.4\n% smsgate test\n");
      await client.notify("session/update", {
        sessionId,
        update: {
          sessionUpdate: "agent_message_chunk",
          content: { type: "image", mimeType: "image/png", data: png.toString("base64") },
        },
      });
      await client.notify("session/update", {
        sessionId,
        update: {
          sessionUpdate: "agent_message_chunk",
          content: {
            type: "resource",
            resource: { uri: "file:///tmp/report.pdf", mimeType: "application/pdf", blob: pdf.toString("base64") },
          },
        },
      });
      event({ ev: "drew", png: png.toString("base64"), pdf: pdf.toString("base64") });
      await say("here is your chart");
      return { stopReason: "end_turn" };
    }
    let reply;
    if (text.includes("PERMISSION")) {
      const res = await client.request("session/request_permission", {
        sessionId,
        toolCall: text.includes("RUNCMD")
          ? { toolCallId: "call-2", title: "Run a shell command", kind: "execute", status: "pending",
              rawInput: { command: ["rm", "-rf", "build/"] } }
          : { toolCallId: "call-1", title: "Write notes.txt", kind: "edit", status: "pending" },
        options: [
          { optionId: "yes-once", name: "Allow once", kind: "allow_once" },
          { optionId: "yes-always", name: "Always allow", kind: "allow_always" },
          { optionId: "no", name: "Reject", kind: "reject_once" },
        ],
      });
      const outcome = res.outcome.outcome === "selected" ? res.outcome.optionId : "cancelled";
      event({ ev: "permission", outcome });
      reply = `permission: ${outcome}`;
    } else if (text.includes("FLOOD")) {
      for (let i = 0; i < 5000; i++) await say("y".repeat(99) + " ");
      reply = "end of flood";
    } else if (text.includes("PICTURE")) {
      reply = `pictures: ${images.map((b) => `${b.mimeType} ${Buffer.from(b.data, "base64").length} bytes`).join(", ")}`;
    } else {
      const earlier = s.turns.map((t) => t.prompt).join(" / ");
      reply = `[${s.turns.length + 1}] heard: ${text} | earlier: ${earlier || "nothing"}`;
    }
    if (text.includes("GARBAGE")) {
      process.stdout.write("this is not json\n");
      process.stdout.write('{"jsonrpc":"2.0","id":"nobody-asked","result":1}\n');
    }
    // Two chunks: the bridge must assemble them.
    const half = Math.floor(reply.length / 2);
    await say(reply.slice(0, half));
    await say(reply.slice(half));
    s.turns.push({ prompt: text, reply });
    writeSession(sessionId, s);
    return { stopReason: "end_turn" };
  });

// Requests written straight to stdout, whole lines, as fast as the pipe takes them
// (never resolves while the client does not read its answers... or does not read).
async function flood(sessionId) {
  const { once: onceEvent } = await import("node:events");
  let n = 0;
  while (n < 600000) {
    let chunk = "";
    for (let i = 0; i < 1000; i++, n++) {
      chunk +=
        JSON.stringify({
          jsonrpc: "2.0",
          id: `flood-${n}`,
          method: "fs/read_text_file",
          params: { sessionId, path: "/etc/hostname" },
        }) + "\n";
    }
    if (!process.stdout.write(chunk)) await onceEvent(process.stdout, "drain");
    if (n % 100000 === 0) event({ ev: "flooded", n });
  }
  await new Promise(() => {});
}

// stdin read on demand, so that NOREADONCE can stop reading it for real (the pipe
// fills and the client's writes block).
let deaf = false;
const lines = process.stdin[Symbol.asyncIterator]();
const input = new ReadableStream({
  async pull(controller) {
    if (deaf) return new Promise(() => {});
    const { value, done } = await lines.next();
    if (done) controller.close();
    else controller.enqueue(new Uint8Array(value));
  },
});

app.connect(acp.ndJsonStream(Writable.toWeb(process.stdout), input));
