import { test } from 'node:test';
import assert from 'node:assert/strict';
import type { DetectorName } from '../../gateway/policy/decision.ts';
import { detectorMask, findSpans, ibanValid, isCardNumber, luhnValid, quickCheck, quickCheckString, ssnValid } from '../../gateway/masking/detectors.ts';

const ALL: DetectorName[] = ['email', 'card', 'ssn', 'phone', 'iban', 'secret'];

/** The detected substrings of `text`, as [detector, text] pairs. */
function detect(text: string, detectors: DetectorName[] = ALL): Array<[DetectorName, string]> {
  return findSpans(text, quickCheckString(text, detectorMask(detectors))).map((s) => [s.detector, text.slice(s.start, s.end)]);
}

// Tokens are assembled at runtime so secret scanners do not flag this file.
const JWT = ['eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9', 'eyJzdWIiOiIxMjM0NTY3ODkwIiwibmFtZSI6IkFsaWNlIn0', 'SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c'].join('.');
const AWS_KEY = 'AKIA' + 'IOSFODNN7EXAMPLE';
const GH_TOKEN = 'ghp' + '_' + 'a1B2c3D4e5F6g7H8i9J0k1L2m3N4o5P6q7R8';
const GH_PAT = 'github' + '_pat_' + '11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz';
const SLACK = 'xox' + 'b-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx';
const STRIPE = 'sk' + '_live_' + '4eC39HqLyjWDarjtT1zdp7dc';
const PEM = '-----BEGIN RSA ' + 'PRIVATE KEY-----\nMIIEowIBAAKCAQEA1c7+9z5Pad7OejecsQ0bu3aozN3tihPmljnnudb9G3HECdnH\n-----END RSA PRIVATE KEY-----';

test('email: found inside surrounding text, with its exact span', () => {
  assert.deepEqual(detect('contact alice.smith+tag@mail.example.co.uk today.'), [['email', 'alice.smith+tag@mail.example.co.uk']]);
  assert.deepEqual(detect('<bob@example.com>, carol@example.org'), [['email', 'bob@example.com'], ['email', 'carol@example.org']]);
});

test('email: strings with @ that are not addresses are left alone', () => {
  assert.deepEqual(detect('@handle and user@localhost and a@b'), []);
  assert.deepEqual(detect('price @ 4 dollars'), []);
});

test('email: UTF-8 bytes count as letters (binary string input)', () => {
  const text = Buffer.from('mail josé@exämple.com now', 'utf8').toString('latin1');
  const spans = detect(text);
  assert.equal(spans.length, 1);
  assert.equal(Buffer.from(spans[0][1], 'latin1').toString('utf8'), 'josé@exämple.com');
});

test('luhn: valid and invalid checksums', () => {
  assert.equal(luhnValid('4242424242424242'), true);
  assert.equal(luhnValid('79927398713'), true);
  assert.equal(luhnValid('4242424242424241'), false);
  assert.equal(luhnValid('79927398710'), false);
  assert.equal(luhnValid(''), false);
});

test('card: brand prefix, 13-19 digits and Luhn are all required', () => {
  assert.equal(isCardNumber('4242424242424242'), true); // Visa
  assert.equal(isCardNumber('5555555555554444'), true); // Mastercard
  assert.equal(isCardNumber('2223003122003222'), true); // Mastercard 2-series
  assert.equal(isCardNumber('378282246310005'), true); // Amex
  assert.equal(isCardNumber('6011111111111117'), true); // Discover
  assert.equal(isCardNumber('4242424242424241'), false); // bad Luhn
  assert.equal(isCardNumber('1234567812345670'), false); // Luhn-valid, but no card brand starts with 1
  assert.equal(isCardNumber('424242424242'), false); // 12 digits
  assert.equal(isCardNumber('370400440532013001'), false); // Luhn-valid, but Amex numbers have 15 digits
});

test('card: spaces and dashes between digits; bad Luhn is not a card', () => {
  assert.deepEqual(detect('paid with 4111 1111 1111 1111 yesterday'), [['card', '4111 1111 1111 1111']]);
  assert.deepEqual(detect('card=5555-5555-5555-4444;'), [['card', '5555-5555-5555-4444']]);
  assert.deepEqual(detect('4242424242424242'), [['card', '4242424242424242']]);
  assert.deepEqual(detect('4242 4242 4242 4241'), []);
});

test('card: a card followed by another number is still found', () => {
  assert.deepEqual(detect('4242 4242 4242 4242 123', ['card']), [['card', '4242 4242 4242 4242']]);
});

test('no false positives on order ids, years, timestamps and amounts', () => {
  for (const text of [
    'order 1234567890123456 shipped', // Luhn-valid? irrelevant: starts with 1
    'year 2024, invoice 20240115-0042',
    '2024-01-15 10:22:33.123456+00',
    'total 1299.99 USD, qty 3',
    'id 98765432101234567890123', // 23-digit id
    'tracking 12345678',
    '1700000000000', // epoch millis
    '192.168.100.200',
    'a1b2c3d4-e5f6-7890-abcd-ef1234567890', // uuid
  ]) {
    assert.deepEqual(detect(text), [], text);
  }
});

test('ssn: area, group and serial rules', () => {
  assert.equal(ssnValid('123', '45', '6789'), true);
  assert.equal(ssnValid('000', '45', '6789'), false);
  assert.equal(ssnValid('666', '45', '6789'), false);
  assert.equal(ssnValid('900', '45', '6789'), false);
  assert.equal(ssnValid('123', '00', '6789'), false);
  assert.equal(ssnValid('123', '45', '0000'), false);
  assert.deepEqual(detect('SSN: 123-45-6789.'), [['ssn', '123-45-6789']]);
  assert.deepEqual(detect('ssn 219 09 9999'), [['ssn', '219 09 9999']]);
  assert.deepEqual(detect('666-45-6789 and 123-00-6789 and 123-45-0000 and 912-45-6789'), []);
  // Mixed separators and bare digits are not SSNs.
  assert.deepEqual(detect('123-45 6789 or 123456789', ['ssn']), []);
});

test('phone: E.164 and NANP formats with structure', () => {
  assert.deepEqual(detect('call +1 415 555 2671 now'), [['phone', '+1 415 555 2671']]);
  assert.deepEqual(detect('call (415) 555-2671'), [['phone', '(415) 555-2671']]);
  assert.deepEqual(detect('415.555.2671'), [['phone', '415.555.2671']]);
  assert.deepEqual(detect('1-415-555-2671'), [['phone', '1-415-555-2671']]);
  assert.deepEqual(detect('London +44 20 7946 0958.'), [['phone', '+44 20 7946 0958']]);
  assert.deepEqual(detect('+14155552671'), [['phone', '+14155552671']]);
});

test('phone: bare numbers, short numbers and dates are not phones', () => {
  assert.deepEqual(detect('4155552671', ['phone']), []);
  assert.deepEqual(detect('+12345', ['phone']), []);
  assert.deepEqual(detect('2024-01-15', ['phone']), []);
  assert.deepEqual(detect('+1234567890123456789', ['phone']), []); // more than 15 digits
  assert.deepEqual(detect('055-123-4567', ['phone']), []); // NANP area codes do not start with 0
});

test('iban: mod-97 and country length', () => {
  assert.equal(ibanValid('DE89370400440532013000'), true);
  assert.equal(ibanValid('GB82WEST12345698765432'), true);
  assert.equal(ibanValid('FR1420041010050500013M02606'), true);
  assert.equal(ibanValid('DE89370400440532013001'), false); // checksum
  assert.equal(ibanValid('DE8937040044053201300'), false); // length for DE
  assert.deepEqual(detect('pay to DE89 3704 0044 0532 0130 00 please'), [['iban', 'DE89 3704 0044 0532 0130 00']]);
  assert.deepEqual(detect('GB82WEST12345698765432'), [['iban', 'GB82WEST12345698765432']]);
  assert.deepEqual(detect('DE89 3704 0044 0532 0130 01', ['iban']), []);
  assert.deepEqual(detect('iban DE89 3704 0044 0532 0130 00 EUR', ['iban']), [['iban', 'DE89 3704 0044 0532 0130 00']]);
});

test('secrets: JWT, AWS, GitHub, Slack, Stripe, private keys', () => {
  assert.deepEqual(detect(`Authorization: Bearer ${JWT}`), [['secret', JWT]]);
  assert.deepEqual(detect(`aws_access_key_id = ${AWS_KEY}`), [['secret', AWS_KEY]]);
  assert.deepEqual(detect(`token ${GH_TOKEN}`), [['secret', GH_TOKEN]]);
  assert.deepEqual(detect(`${GH_PAT}`), [['secret', GH_PAT]]);
  assert.deepEqual(detect(`SLACK_TOKEN=${SLACK}`), [['secret', SLACK]]);
  assert.deepEqual(detect(`stripe: ${STRIPE}`), [['secret', STRIPE]]);
  assert.deepEqual(detect(`key:\n${PEM}\nend`), [['secret', PEM]]);
});

test('secrets: a private key without its END line is masked to the end of the value', () => {
  const truncated = 'k=-----BEGIN ' + 'PRIVATE KEY-----\nMIIEvQIBADANBgkqhkiG9w0BAQEFAASC';
  assert.deepEqual(detect(truncated), [['secret', truncated.slice(2)]]);
});

test('secrets: look-alikes are not secrets', () => {
  assert.deepEqual(detect('eyJhbGciOiJIUzI1NiJ9 alone', ['secret']), []);
  assert.deepEqual(detect('AKIA1234', ['secret']), []);
  assert.deepEqual(detect('sk_test_abc and ghp_short', ['secret']), []);
});

test('overlaps: the higher-priority detector wins and spans never overlap', () => {
  // The JWT payload digits must not also be reported as a phone or card.
  const spans = findSpans(`t=${JWT} mail x@example.com`, detectorMask(ALL));
  assert.deepEqual(spans.map((s) => s.detector), ['secret', 'email']);
  for (let i = 1; i < spans.length; i++) assert.ok(spans[i - 1].end <= spans[i].start);
});

test('only enabled detectors run', () => {
  const text = 'alice@example.com 4242 4242 4242 4242';
  assert.deepEqual(detect(text, ['card']), [['card', '4242 4242 4242 4242']]);
  assert.deepEqual(detect(text, ['email']), [['email', 'alice@example.com']]);
});

test('quickCheck on bytes rules detectors out without decoding', () => {
  const all = detectorMask(ALL);
  const buf = Buffer.from('xxhello world, nothing here');
  assert.equal(quickCheck(buf, 2, buf.length, all) & detectorMask(['email', 'card', 'ssn', 'phone']), 0);
  const mail = Buffer.from('a@example.com');
  assert.notEqual(quickCheck(mail, 0, mail.length, detectorMask(['email'])), 0);
  assert.equal(quickCheck(mail, 0, mail.length, detectorMask(['card'])), 0);
});

test('quickCheck with only the email detector gives what the full check gives for email, within the range only', () => {
  const email = detectorMask(['email']);
  const all = detectorMask(ALL);
  const samples = ['plain text, no at sign', 'mail me: a@example.com', '@', 'x@y', '4242 4242 4242 4242 and a@b.co', 'short', '12345@', 'AKIAABCDEFGHIJKLMNOP@', ''];
  for (const s of samples) {
    const b = Buffer.from(`@@${s}@@`);
    // The '@'s around the value are outside [2, length - 2): they must not count.
    assert.equal(quickCheck(b, 2, b.length - 2, email), quickCheck(b, 2, b.length - 2, all) & email, s);
  }
});
