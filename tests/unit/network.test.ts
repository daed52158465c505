import { describe, expect, it } from "vitest";
import { isRelay } from "../../src/app/relay.ts";
import { sameOriginUrl } from "../../src/vm/network.ts";

const page = { hostname: "127.0.0.1", port: "8080", origin: "http://127.0.0.1:8080" };

describe("guest network", () => {
  it("sends the guest's requests for the page's own server to the page's origin", () => {
    expect(sameOriginUrl("http://localhost:8080/repo/bios/seabios.bin?x=1", page)).toBe("http://127.0.0.1:8080/repo/bios/seabios.bin?x=1");
    // Another port, another host, or HTTPS are left as the guest asked.
    expect(sameOriginUrl("http://localhost:9000/", page)).toBe("http://localhost:9000/");
    expect(sameOriginUrl("http://example.org:8080/", page)).toBe("http://example.org:8080/");
    expect(sameOriginUrl("https://localhost:8080/", page)).toBe("https://localhost:8080/");
  });

  it("accepts fetch and wisp relay URLs only", () => {
    expect(isRelay("fetch")).toBe(true);
    expect(isRelay("wisp://127.0.0.1:8080/wisp/")).toBe(true);
    expect(isRelay("wisps://relay.example/")).toBe(true);
    expect(isRelay("ws://127.0.0.1/")).toBe(false);
    expect(isRelay("javascript:alert(1)")).toBe(false);
  });
});
