/** Small REST client for the CLI. Errors from the coordinator keep their codes; the token never appears in output. */
export class ApiError extends Error {
  constructor(readonly status: number, readonly code: string, message: string) {
    super(message);
  }
}

export interface ApiInit {
  method?: string;
  body?: unknown;
  token?: string | undefined;
}

export async function api<T>(base: string, path: string, init: ApiInit = {}): Promise<T> {
  const headers: Record<string, string> = {};
  if (init.body !== undefined) headers['content-type'] = 'application/json';
  if (init.token) headers.authorization = `Bearer ${init.token}`;
  const res = await fetch(new URL(path, base), {
    method: init.method ?? 'GET', headers,
    ...(init.body === undefined ? {} : { body: JSON.stringify(init.body) }),
  });
  const text = await res.text();
  let json: unknown;
  try {
    json = text ? JSON.parse(text) : {};
  } catch {
    throw new ApiError(res.status, 'COHORT_ERR_PROTOCOL_MALFORMED', `coordinator answered ${res.status} with non-JSON`);
  }
  if (!res.ok) {
    const e = (json as { error?: { code?: string; message?: string } }).error;
    throw new ApiError(res.status, e?.code ?? 'COHORT_ERR_SERVER_INTERNAL', e?.message ?? `HTTP ${res.status}`);
  }
  return json as T;
}

export async function apiBytes(base: string, path: string, token?: string): Promise<Uint8Array> {
  const res = await fetch(new URL(path, base), { headers: token ? { authorization: `Bearer ${token}` } : {} });
  if (!res.ok) throw new ApiError(res.status, 'COHORT_ERR_STUDY_NO_MODEL', `HTTP ${res.status}`);
  return new Uint8Array(await res.arrayBuffer());
}
