// Built-in functions reviewed as read-only: calling them cannot write, run code elsewhere or
// change settings. A call to anything else (a user-defined function, an extension's function,
// a built-in not on this list such as nextval, set_config or pg_terminate_backend) may do any
// of those, so a statement calling it is classified as a potential write (kind `write`).
//
// A name counts as this built-in when it is called bare (PostgreSQL resolves bare names in
// pg_catalog first unless search_path names pg_catalog later, which the classifier treats as a
// setting change) or qualified with `pg_catalog.`. Any other schema is a user function.

const SAFE = [
  // strings
  'lower', 'upper', 'initcap', 'length', 'char_length', 'character_length', 'octet_length', 'bit_length',
  'substr', 'substring', 'left', 'right', 'trim', 'btrim', 'ltrim', 'rtrim', 'lpad', 'rpad', 'replace',
  'translate', 'reverse', 'repeat', 'concat', 'concat_ws', 'format', 'position', 'strpos', 'split_part',
  'starts_with', 'string_to_array', 'array_to_string', 'regexp_replace', 'regexp_match', 'regexp_matches',
  'regexp_split_to_array', 'regexp_split_to_table', 'regexp_count', 'regexp_instr', 'regexp_like', 'regexp_substr',
  'md5', 'sha224', 'sha256', 'sha384', 'sha512', 'encode', 'decode', 'convert', 'convert_from', 'convert_to',
  'to_hex', 'ascii', 'chr', 'quote_ident', 'quote_literal', 'quote_nullable', 'overlay', 'normalize', 'unistr',
  'to_char', 'to_number', 'to_date', 'to_timestamp', 'casefold',
  // numbers
  'abs', 'ceil', 'ceiling', 'floor', 'round', 'trunc', 'mod', 'power', 'pow', 'sqrt', 'cbrt', 'exp', 'ln', 'log',
  'log10', 'sign', 'div', 'greatest', 'least', 'random', 'pi', 'degrees', 'radians', 'sin', 'cos', 'tan',
  'width_bucket', 'scale', 'gcd', 'lcm', 'factorial', 'numeric', 'int4', 'int8', 'float8', 'text',
  // dates and times
  'now', 'current_date', 'current_time', 'current_timestamp', 'localtime', 'localtimestamp', 'clock_timestamp',
  'statement_timestamp', 'transaction_timestamp', 'timeofday', 'date_trunc', 'date_part', 'extract', 'age',
  'make_date', 'make_time', 'make_timestamp', 'make_timestamptz', 'make_interval', 'justify_days',
  'justify_hours', 'justify_interval', 'date_bin', 'isfinite', 'timezone', 'to_timestamp',
  // conditionals, arrays, ranges
  'coalesce', 'nullif', 'array_length', 'array_lower', 'array_upper', 'array_ndims', 'array_dims',
  'array_position', 'array_positions', 'array_append', 'array_prepend', 'array_cat', 'array_remove',
  'array_replace', 'cardinality', 'unnest', 'generate_series', 'generate_subscripts', 'lower_inf', 'upper_inf',
  'isempty', 'range_merge', 'int4range', 'int8range', 'numrange', 'daterange', 'tsrange', 'tstzrange',
  // aggregates and window functions
  'count', 'sum', 'avg', 'min', 'max', 'bool_and', 'bool_or', 'every', 'array_agg', 'string_agg',
  'json_agg', 'jsonb_agg', 'json_object_agg', 'jsonb_object_agg', 'stddev', 'stddev_pop', 'stddev_samp',
  'variance', 'var_pop', 'var_samp', 'percentile_cont', 'percentile_disc', 'mode', 'corr', 'covar_pop',
  'covar_samp', 'regr_slope', 'regr_intercept', 'bit_and', 'bit_or', 'bit_xor', 'any_value',
  'row_number', 'rank', 'dense_rank', 'percent_rank', 'cume_dist', 'ntile', 'lag', 'lead', 'first_value',
  'last_value', 'nth_value',
  // json / jsonb / xml
  'to_json', 'to_jsonb', 'row_to_json', 'array_to_json', 'json_build_object', 'jsonb_build_object',
  'json_build_array', 'jsonb_build_array', 'json_object', 'jsonb_object', 'json_array_length',
  'jsonb_array_length', 'json_each', 'jsonb_each', 'json_each_text', 'jsonb_each_text', 'json_extract_path',
  'jsonb_extract_path', 'json_extract_path_text', 'jsonb_extract_path_text', 'json_object_keys',
  'jsonb_object_keys', 'json_array_elements', 'jsonb_array_elements', 'json_array_elements_text',
  'jsonb_array_elements_text', 'json_typeof', 'jsonb_typeof', 'jsonb_set', 'jsonb_insert', 'jsonb_pretty',
  'jsonb_strip_nulls', 'json_strip_nulls', 'jsonb_path_query', 'jsonb_path_exists', 'jsonb_path_match',
  'jsonb_path_query_array', 'jsonb_path_query_first', 'json_populate_record', 'jsonb_populate_record',
  'json_to_record', 'jsonb_to_record', 'json_to_recordset', 'jsonb_to_recordset',
  'xmlelement', 'xmlforest', 'xmlagg', 'xmlconcat', 'query_to_xml', 'query_to_xmlschema',
  'query_to_xml_and_xmlschema', 'table_to_xml', 'table_to_xmlschema', 'table_to_xml_and_xmlschema', 'ts_stat',
  // full-text search
  'to_tsvector', 'to_tsquery', 'plainto_tsquery', 'phraseto_tsquery', 'websearch_to_tsquery', 'ts_rank',
  'ts_rank_cd', 'ts_headline', 'setweight', 'ts_rewrite',
  // session and catalog information
  'current_user', 'session_user', 'current_role', 'user', 'current_schema', 'current_schemas',
  'current_database', 'current_catalog', 'current_setting', 'version', 'pg_backend_pid', 'inet_client_addr',
  'inet_server_addr', 'pg_postmaster_start_time', 'pg_conf_load_time', 'pg_typeof', 'format_type',
  'pg_get_viewdef', 'pg_get_functiondef', 'pg_get_indexdef', 'pg_get_constraintdef', 'pg_get_expr',
  'pg_get_userbyid', 'pg_get_serial_sequence', 'pg_table_is_visible', 'pg_type_is_visible',
  'pg_function_is_visible', 'has_table_privilege', 'has_column_privilege', 'has_schema_privilege',
  'has_database_privilege', 'has_function_privilege', 'has_sequence_privilege', 'pg_has_role',
  'pg_relation_size', 'pg_total_relation_size', 'pg_table_size', 'pg_indexes_size', 'pg_database_size',
  'pg_size_pretty', 'pg_column_size', 'obj_description', 'col_description', 'shobj_description',
  'pg_encoding_to_char', 'pg_char_to_encoding', 'pg_is_in_recovery', 'pg_current_wal_lsn', 'txid_current_snapshot',
  'pg_sleep', 'gen_random_uuid', 'uuid_generate_v4', 'row', 'num_nulls', 'num_nonnulls', 'pg_input_is_valid',
  // catalog introspection psql's \d commands use
  'pg_get_triggerdef', 'pg_get_ruledef', 'pg_get_partkeydef', 'pg_get_partition_constraintdef',
  'pg_get_statisticsobjdef', 'pg_get_statisticsobjdef_columns', 'pg_get_function_arguments',
  'pg_get_function_result', 'pg_get_function_identity_arguments', 'pg_get_keywords', 'pg_describe_object',
  'pg_identify_object', 'pg_collation_is_visible', 'pg_opclass_is_visible', 'pg_operator_is_visible',
  'pg_conversion_is_visible', 'pg_opfamily_is_visible', 'pg_statistics_obj_is_visible', 'pg_ts_config_is_visible',
  'pg_ts_dict_is_visible', 'pg_ts_parser_is_visible', 'pg_ts_template_is_visible', 'pg_relation_is_publishable',
  'pg_get_replica_identity_index', 'pg_tablespace_location', 'pg_tablespace_size', 'aclexplode', 'acldefault',
  'pg_column_compression', 'pg_get_serial_sequence', 'pg_settings_get_flags', 'pg_get_constraintdef',
  'array_remove', 'pg_encoding_max_length', 'pg_get_publication_tables', 'pg_sequence_parameters',
];

const SAFE_SET = new Set(SAFE);

/** True when `fn` (lower-case, as the classifier records it) is a reviewed read-only built-in. */
export function isSafeBuiltin(fn: string): boolean {
  const dot = fn.lastIndexOf('.');
  if (dot < 0) return SAFE_SET.has(fn);
  return fn.slice(0, dot) === 'pg_catalog' && SAFE_SET.has(fn.slice(dot + 1));
}
