// An independent MCP client for cmd/mandate/ts_test.go: the official
// TypeScript SDK spawns the mandate binary over stdio, lists the tools and
// calls them. The SDK validates every structured result against the tool's
// outputSchema (it throws otherwise), so a schema that only our Go code
// accepts fails here. It prints one JSON object with what it saw; the Go
// test checks it.
//
// usage: node client.mjs MANDATE_BINARY WORKDIR
//        node client.mjs --http URL API_KEY   (a running `mandate serve --http`;
//        the key goes in every request's Authorization header)
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";

const args = process.argv.slice(2);
let transport;
if (args[0] === "--http") {
  const [, url, key] = args;
  transport = new StreamableHTTPClientTransport(new URL(url), {
    requestInit: { headers: { Authorization: `Bearer ${key}` } },
  });
} else {
  const [bin, dir] = args;
  transport = new StdioClientTransport({
    command: bin,
    args: ["serve", "--db", `${dir}/mandate.db`, "--store", `${dir}/store.db`],
    env: { ...process.env, MANDATE_AGENT: "demo-agent", MANDATE_LOG_LEVEL: "warn" },
    cwd: dir,
    stderr: "inherit",
  });
}
const client = new Client({ name: "mandate-ts-test", version: "1.0.0" });
await client.connect(transport);

const out = { server: client.getServerVersion(), protocol: transport._protocolVersion ?? null, tools: {}, calls: {} };
const { tools } = await client.listTools();
for (const t of tools) {
  out.tools[t.name] = { annotations: t.annotations ?? null, hasOutputSchema: !!t.outputSchema };
}

async function call(label, name, args) {
  try {
    const res = await client.callTool({ name, arguments: args });
    let text = null;
    for (const c of res.content ?? []) if (c.type === "text") text = c.text;
    out.calls[label] = { isError: !!res.isError, structured: res.structuredContent ?? null, text };
  } catch (e) {
    out.calls[label] = { thrown: String(e && e.message ? e.message : e) };
  }
}

await call("get_order", "get_order", { order_id: "ord_1001" });
await call("refund_small", "refund_order", { order_id: "ord_1001", amount: "30.00", reason: "Item arrived scratched", idempotency_key: "ts-small-1" });
await call("refund_small_retry", "refund_order", { order_id: "ord_1001", amount: "30.00", reason: "Item arrived scratched", idempotency_key: "ts-small-1" });
await call("refund_medium", "refund_order", { order_id: "ord_1002", amount: "150.00", reason: "Late delivery, customer upset" });
await call("refund_large", "refund_order", { order_id: "ord_1002", amount: "900.00", reason: "Customer asks for everything" });
await call("refund_bad_amount", "refund_order", { order_id: "ord_1001", amount: "thirty", reason: "x" });
await call("unknown_order", "get_order", { order_id: "ord_nope" });
const pending = out.calls.refund_medium.structured?.action_id;
if (pending) await call("status_pending", "get_action_status", { action_id: pending });

await client.close();
process.stdout.write(JSON.stringify(out) + "\n");
