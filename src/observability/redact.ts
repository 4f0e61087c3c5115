/** Helpers that keep secrets out of logs and API answers. */

/** A URL with any user:password removed. */
export function withoutCredentials(url: string): string {
  if (!url) return url;
  try {
    const u = new URL(url);
    if (!u.username && !u.password) return url;
    u.username = '';
    u.password = '';
    return u.toString().replace(/\/$/, '');
  } catch {
    return '(invalid URL)';
  }
}
